#!/usr/bin/env bash
# Checks that docs/integration.md works as written (ctest: integration/...).
#
#   scripts/check-integration.sh static
#       - every file the doc quotes (<!-- quote: PATH --> or
#         <!-- quote: PATH#SECTION --> before a fenced block) is quoted
#         verbatim, and every file and recipe section that must be quoted is;
#       - the systemd units pass `systemd-analyze verify`;
#       - the libvirt domain XML passes `virt-xml-validate` (libvirt-clients);
#       - the QEMU disk options of the example /etc/rewind/vm1.conf are the
#         ones the recipe runs.
#   scripts/check-integration.sh recipe REWIND PLUGIN GUEST_IMAGE
#       runs scripts/integration/qemu-recipe.sh with its checks on, against
#       the test guest under QEMU/TCG, in a temporary directory.
#
# Exit status 77 (ctest: skipped) when a tool a part needs is not installed.
set -euo pipefail
# Debian's tools first (python3 for the checks below), but the nbdkit found
# first in the caller's PATH stays first: under scripts/sanitize.sh that is its wrapper,
# which preloads the sanitizer runtime the plugin needs.
nbdkit_dir=$(dirname "$(command -v nbdkit || echo /usr/sbin/nbdkit)")
PATH=$nbdkit_dir:/usr/bin:/usr/sbin:$PATH
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DOC=$ROOT/docs/integration.md
RECIPE=$ROOT/scripts/integration/qemu-recipe.sh

fail() { echo "check-integration: FAILED: $*" >&2; exit 1; }

check_quotes() {
  python3 - "$ROOT" "$DOC" <<'EOF'
import re, sys
root, doc = sys.argv[1], sys.argv[2]
text = open(doc).read()
must = {
    "scripts/systemd/rewind-nbd@.service", "scripts/systemd/rewind-supervise@.service",
    "scripts/systemd/vm1.conf", "scripts/libvirt/vm1.xml",
} | {"scripts/integration/qemu-recipe.sh#" + s for s in (
    "serve", "install", "qemu", "checkpoint", "time-travel", "vm-checkpoint",
    "vm-restore", "supervise", "supervise-stop")}
seen, bad = set(), []
for m in re.finditer(r"<!-- quote: (\S+) -->\n```[^\n]*\n(.*?)```\n", text, re.S):
    ref, quoted = m.group(1), m.group(2)
    path, _, section = ref.partition("#")
    try:
        src = open(f"{root}/{path}").read()
    except OSError as e:
        bad.append(f"{ref}: {e}"); continue
    if section:
        sm = re.search(rf"^# >>> {re.escape(section)}\n(.*?)^# <<<\n", src, re.S | re.M)
        if not sm:
            bad.append(f"{ref}: no section '# >>> {section}' in {path}"); continue
        src = sm.group(1)
    if quoted != src:
        bad.append(f"{ref}: the doc's quote differs from the file")
    seen.add(ref)
for ref in sorted(must - seen):
    bad.append(f"{ref}: not quoted in docs/integration.md")
# Sections of the recipe that the doc does not quote would be run but not
# documented: every section must be quoted.
sections = set(re.findall(r"^# >>> (\S+)$", open(f"{root}/scripts/integration/qemu-recipe.sh").read(), re.M))
for s in sorted(sections):
    if "scripts/integration/qemu-recipe.sh#" + s not in seen:
        bad.append(f"recipe section {s}: not quoted in docs/integration.md")
for b in bad:
    print("check-integration: " + b, file=sys.stderr)
print(f"check-integration: {len(seen)} quotes match their files")
sys.exit(1 if bad else 0)
EOF
}

check_units() {
  if ! command -v systemd-analyze >/dev/null; then
    echo "check-integration: systemd-analyze not installed: the units were NOT verified"
    return 77
  fi
  local tmp out
  tmp=$(mktemp -d)
  # verify wants each ExecStart= program to exist: the CLI is not installed
  # here, so point it at the built one (REWIND_CLI) or at /bin/true.
  local cli=${REWIND_CLI:-/bin/true}
  for unit in rewind-nbd@.service rewind-supervise@.service; do
    sed "s|/usr/local/bin/rewind|$cli|g" "$ROOT/scripts/systemd/$unit" >"$tmp/$unit"
    ln -s "$unit" "$tmp/${unit/@/@vm1}"
  done
  # It prints warnings (unknown keys, bad values) but still exits 0 for
  # them: any output is a failure.
  out=$(cd "$tmp" && systemd-analyze verify ./rewind-nbd@vm1.service ./rewind-supervise@vm1.service 2>&1) ||
    { rm -rf "$tmp"; fail "systemd-analyze verify: $out"; }
  rm -rf "$tmp"
  [[ -z $out ]] || fail "systemd-analyze verify: $out"
  echo "check-integration: systemd-analyze verify: both units clean"
}

check_xml() {
  if ! command -v virt-xml-validate >/dev/null; then
    echo "check-integration: virt-xml-validate (libvirt-clients) not installed: the domain XML was NOT validated"
    return 77
  fi
  virt-xml-validate "$ROOT/scripts/libvirt/vm1.xml" domain || fail "virt-xml-validate scripts/libvirt/vm1.xml"
}

check_conf() {
  # The example configuration for systemd and the recipe must define the
  # disks the same way: the recipe is what runs.
  python3 - "$ROOT" <<'EOF'
import re, sys
root = sys.argv[1]
conf = open(f"{root}/scripts/systemd/vm1.conf").read().replace("\\\n", "")
recipe = open(f"{root}/scripts/integration/qemu-recipe.sh").read()
def disk_opts(text, sock):
    opts = re.findall(r"-(?:blockdev driver=nbd|device virtio-blk-pci)\S*", text)
    return [o.replace(sock, "SOCK") for o in opts]
a = disk_opts(conf, "/run/rewind/vm1.sock")
b = disk_opts(recipe, '"$RUN/vm1.sock"')
if not a or a != b:
    print("check-integration: the disks of vm1.conf and of the recipe differ:\n  %s\n  %s" % (a, b), file=sys.stderr)
    sys.exit(1)
print(f"check-integration: vm1.conf's {len(a)} disk options are the recipe's")
EOF
}

case ${1:-} in
  static)
    check_quotes || fail "docs/integration.md quotes"
    check_conf || fail "vm1.conf"
    rc=0
    check_units || rc=$?
    check_xml || rc=$?
    exit "$rc"
    ;;
  recipe)
    [[ $# -eq 4 ]] || { echo "usage: $0 recipe REWIND PLUGIN GUEST_IMAGE" >&2; exit 2; }
    for tool in nbdkit nbdcopy nbdinfo qemu-system-x86_64 qemu-img; do
      command -v "$tool" >/dev/null || { echo "check-integration: $tool not installed"; exit 77; }
    done
    work=$(mktemp -d /tmp/rewind-integ.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    REWIND=$2 PLUGIN=$3 IMAGE=$4 STORE=$work/store RUN=$work/run OUT=$work \
      OS_SIZE=4M DATA_SIZE=4M ACCEL=tcg MEM=256M SV_INTERVAL=3 SV_STOP_TIMEOUT=3 CHECK=1 \
      "$RECIPE" || { echo "--- guest serial:"; tail -20 "$work/run/vm1.serial" 2>/dev/null; exit 1; }
    ;;
  *)
    echo "usage: $0 static | recipe REWIND PLUGIN GUEST_IMAGE" >&2
    exit 2
    ;;
esac
