#!/bin/sh
# Write an edge-runtime device config (TOML) that joins the fleet, and print the broker-side
# password line for the device. See README.md.
set -eu

usage() {
    cat <<USAGE
usage: provision.sh --device-id ID --broker HOST[:PORT] [options]

  --device-id ID     the device's id in the fleet, also its broker username
                     (1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)
  --broker HOST[:PORT]  the fleet's Mosquitto (port: 8883 with --ca, else 1883)
  --password PW      broker password (URL-safe: A-Z a-z 0-9 . _ ~ -); default: generated
  --ca FILE          CA bundle of the broker: use TLS (mqtts://)
  --fleet NAME       fleet name (default: default)
  --group NAME       the device's group, for targeting (--to group:NAME)
  --tags A,B         the device's tags, for targeting (--to tag:A)
  --keys PATH        public key file or directory of *.pub packages must be signed with
                     (default: /etc/edge-runtime/keys)
  --fleet-keys PATH  public key file or directory of *.pub the manager's desired states must
                     be signed with (default: the --keys, when one key signs both)
  --store DIR        model store (default: /var/lib/edge-runtime/store)
  --port N           HTTP port on 127.0.0.1 (default: 8080)
  --config FILE      where to write (default: /etc/edge-runtime/config.toml)
  --owner-group G    group that may read the config, the service's (default: edge)
USAGE
}

die() { echo "provision.sh: $*" >&2; exit 2; }

device_id="" broker="" password="" ca="" fleet="default" group="" tags="" fleet_keys=""
keys="/etc/edge-runtime/keys" store="/var/lib/edge-runtime/store" port="8080"
config="/etc/edge-runtime/config.toml" owner_group="edge"

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --device-id|--broker|--password|--ca|--fleet|--group|--tags|--keys|--fleet-keys|\
--store|--port|--config|--owner-group)
            [ $# -ge 2 ] || die "$1 needs a value"
            opt=$(printf '%s' "${1#--}" | tr - _)
            eval "$opt=\$2"
            shift 2 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[ -n "$device_id" ] || die "--device-id is required"
[ -n "$broker" ] || die "--broker is required"

matches() { printf '%s' "$1" | grep -Eqx -- "$2"; }
id_re='[A-Za-z0-9][A-Za-z0-9._-]{0,63}'
matches "$device_id" "$id_re" || die "device id '$device_id': use 1-64 of A-Z a-z 0-9 . _ -"
matches "$fleet" "$id_re" || die "fleet '$fleet': use 1-64 of A-Z a-z 0-9 . _ -"
[ -z "$group" ] || matches "$group" "$id_re" || die "group '$group': use A-Z a-z 0-9 . _ -"
[ -z "$tags" ] || matches "$tags" "$id_re(,$id_re)*" || die "tags '$tags': use A,B,..."
matches "$port" '[0-9]{1,5}' || die "port '$port' is not a number"
matches "$broker" '[A-Za-z0-9.-]+(:[0-9]{1,5})?' || die "broker '$broker': use HOST or HOST:PORT"
for path in "$keys" "$store" "$config" ${ca:+"$ca"} ${fleet_keys:+"$fleet_keys"}; do
    case "$path" in *'"'*|*'\'*) die "path '$path' must not contain quotes or backslashes" ;; esac
done

if [ -z "$password" ]; then
    password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
fi
matches "$password" '[A-Za-z0-9._~-]+' || die "password: use only A-Z a-z 0-9 . _ ~ - (it goes in a URL)"

if [ -n "$ca" ]; then
    [ -r "$ca" ] || die "CA file '$ca' is not readable"
    scheme="mqtts" default_port=8883
else
    scheme="mqtt" default_port=1883
fi
case "$broker" in *:*) ;; *) broker="$broker:$default_port" ;; esac

toml_list() {  # a,b -> "a", "b"
    printf '%s' "$1" | sed 's/[^,][^,]*/"&"/g; s/,/, /g'
}

umask 077
mkdir -p "$(dirname "$config")"
tmp="$config.tmp.$$"
trap 'rm -f "$tmp"' EXIT
{
    echo "# edge-runtime device config, written by provision.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)."
    echo "# It holds the broker password: keep it readable by root and the service only."
    echo "[serve]"
    echo "store = \"$store\""
    echo "host = \"127.0.0.1\""
    echo "port = $port"
    echo "trusted_keys = [\"$keys\"]"
    [ -z "$fleet_keys" ] || echo "fleet_keys = [\"$fleet_keys\"]"
    echo "fleet_url = \"$scheme://$device_id:$password@$broker\""
    echo "fleet = \"$fleet\""
    echo "device_id = \"$device_id\""
    [ -z "$group" ] || echo "device_group = \"$group\""
    [ -z "$tags" ] || echo "device_tags = [$(toml_list "$tags")]"
    [ -z "$ca" ] || echo "mqtt_ca_file = \"$ca\""
} > "$tmp"
if getent group "$owner_group" >/dev/null 2>&1 && chgrp "$owner_group" "$tmp" 2>/dev/null; then
    chmod 0640 "$tmp"
else
    chmod 0600 "$tmp"
    echo "provision.sh: group '$owner_group' not found: $config is readable by $(id -un) only" >&2
fi
mv "$tmp" "$config"
trap - EXIT

echo "wrote $config for device $device_id ($scheme://$broker, fleet $fleet)"
echo "on the broker, add the device's login:"
echo "  mosquitto_passwd -b /etc/mosquitto/edge/passwd $device_id $password && systemctl reload mosquitto"
echo "on the fleet manager, enroll it (a manager with enrollment known, the default, ignores"
echo "devices it does not know):"
echo "  edgectl devices add $device_id${group:+ --group $group}${tags:+ --tags $tags} --db FLEET.db"
