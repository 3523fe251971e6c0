# Shared by the bench/*.sh scripts: timing and medians.
#
# `timed CMD...` prints the seconds CMD took (its output discarded; a
# failure stops the run), after a `sync` so that earlier writeback does not
# land in the measurement. `median N...` prints the median.
timed() {
  local start end err
  err=$(mktemp)
  sync
  start=$(date +%s.%N)
  "$@" >/dev/null 2>"$err" || { cat "$err" >&2; rm -f "$err"; exit 1; }
  end=$(date +%s.%N)
  rm -f "$err"
  echo "$end - $start" | bc
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
# A bookworm minbase root made by mmdebstrap with the host's apt sources,
# built once into $1 and reused.
minbase_root() {
  [ -d "$1/usr" ] || mmdebstrap --variant=minbase --mode=root --quiet bookworm "$1"
}
