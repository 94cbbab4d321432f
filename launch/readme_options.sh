#!/usr/bin/env bash
# Regenerates the option listings in README.md from the programs' own --help, so they cannot
# drift. Each listing sits between two marker lines that name the command:
#   <!-- BEGIN diffusion-train --help -->
#   ```text
#   ...the output of build/bin/diffusion-train --help...
#   ```
#   <!-- END diffusion-train --help -->
#   launch/readme_options.sh            rewrite README.md's blocks in place
#   launch/readme_options.sh --check    exit 1 (with a diff) when README.md is out of date
# Programs come from $DIFFUSION_BIN, else build/bin. The output is deterministic: Boost wraps
# --help at a fixed 80 columns (not the terminal's width), and trailing blanks are dropped.
# tests/readme_options_test.sh (ctest -R readme_options) runs --check.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DIFFUSION_BIN:-$root/build/bin}"
readme="${DIFFUSION_README:-$root/README.md}"  # another file: for the test's self-check
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "launch/readme_options.sh: unknown argument '$1' (--check or nothing)" >&2; exit 2 ;;
esac
[ -f "$readme" ] || { echo "launch/readme_options.sh: $readme not found" >&2; exit 2; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export LC_ALL=C COLUMNS=80

# Every marked command, in README order; only `diffusion-PROGRAM [subcommand] --help` is run.
mapfile -t commands < <(sed -n 's/^<!-- BEGIN \(.*\) -->$/\1/p' "$readme")
[ "${#commands[@]}" -gt 0 ] || { echo "launch/readme_options.sh: no '<!-- BEGIN ... -->' markers in $readme" >&2; exit 2; }
i=0
for cmd in "${commands[@]}"; do
  if ! [[ "$cmd" =~ ^diffusion-[a-z]+( [a-z0-9-]+)?\ --help$ ]]; then
    echo "launch/readme_options.sh: marker '$cmd' is not 'diffusion-PROGRAM [subcommand] --help'" >&2; exit 2
  fi
  grep -qxF "<!-- END $cmd -->" "$readme" || { echo "launch/readme_options.sh: no '<!-- END $cmd -->' in $readme" >&2; exit 2; }
  read -ra words <<<"$cmd"
  prog="$bin/${words[0]}"
  [ -x "$prog" ] || { echo "launch/readme_options.sh: $prog not found (build first: launch/build.sh)" >&2; exit 2; }
  if ! "$prog" "${words[@]:1}" </dev/null >"$tmp/raw" 2>"$tmp/err"; then
    echo "launch/readme_options.sh: '$cmd' failed:" >&2; cat "$tmp/err" >&2; exit 2
  fi
  { echo '```text'; sed -e 's/[[:space:]]*$//' "$tmp/raw" |
      awk '{ line[NR] = $0 } END { n = NR; while (n > 0 && line[n] == "") n--; for (i = 1; i <= n; i++) print line[i] }'; echo '```'; } >"$tmp/block-$i"
  i=$((i + 1))
done

# Replace what lies between each BEGIN/END pair with its block.
awk -v dir="$tmp" '
  /^<!-- BEGIN .* -->$/ { print; f = dir "/block-" n++; while ((getline line < f) > 0) print line; close(f); skip = 1; next }
  /^<!-- END .* -->$/   { skip = 0 }
  !skip                 { print }
' "$readme" >"$tmp/README.md"

if ((check)); then
  if diff -u "$readme" "$tmp/README.md" >"$tmp/diff"; then
    echo "README.md option listings match --help of ${#commands[@]} commands (${commands[*]})"
    exit 0
  fi
  cat "$tmp/diff"
  echo "README.md's option listings differ from the programs' --help (diff above)." >&2
  echo "Regenerate them with: launch/readme_options.sh   (then commit README.md)" >&2
  exit 1
fi
if cmp -s "$readme" "$tmp/README.md"; then
  echo "README.md: ${#commands[@]} option listings already up to date"
else
  cat "$tmp/README.md" >"$readme"
  echo "README.md: ${#commands[@]} option listings regenerated"
fi
