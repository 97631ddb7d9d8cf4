"""The fleet's state (database, registry, inventory, desired states, rollouts), shared by the
manager service and the admin CLI."""

from __future__ import annotations

from edge_runtime.signing import TrustStore
from fleet.db import open_db
from fleet.desired import DesiredStates
from fleet.drift import DriftService
from fleet.experiments import Experiments
from fleet.inventory import Inventory
from fleet.registry import ModelRegistry
from fleet.rollout.runner import RolloutRunner
from fleet.settings import ManagerSettings


class Fleet:
    """The manager's state, shared by the service and the admin CLI."""

    def __init__(self, settings: ManagerSettings) -> None:
        self.settings = settings
        self.db = open_db(settings.db)
        self.registry = ModelRegistry(self.db, settings.artifacts,
                                      TrustStore.load(settings.trusted_keys),
                                      allow_unsigned=settings.allow_unsigned)
        self.inventory = Inventory(self.db)
        self.desired = DesiredStates(self.db, self.registry, artifact_url=settings.artifact_url,
                                     fleet=settings.fleet, signing_key=settings.signing_key)
        self.drift = DriftService(self.db, self.registry)
        self.rollouts = RolloutRunner(self.db, self.registry, self.inventory, self.desired,
                                      drift=self.drift)
        self.experiments = Experiments(self.db, self.registry, self.inventory, self.desired)
