# shellcheck shell=sh
# The session driver (see agentpool/steps/protocol.py for the protocol). The operator sends it
# over the exec stream's stdin after the bootstrap, preceded by AGENTPOOL_PROTOCOL,
# AGENTPOOL_KEEPER_ID and `agentpool_keeper` (prints keeper.sh). A reader (this shell, consuming
# stdin) and a pump (a background subshell, the only writer of frames) talk through numbered
# files in a per-session queue directory; the reader wakes the pump with USR1, which interrupts
# the pump's `wait` on its poll sleep. No line may be `#end` (the bootstrap stops there).
IFS= read -r N || exit 3
case $N in *[!0-9a-f]*|'') exit 3;; esac
IFS= read -r SD || exit 3
SH=${AGENTPOOL_SH:-/bin/sh}
# The container's own AGENTPOOL_STATE_DIR wins over the operator's setting (second line).
S=${AGENTPOOL_STATE_DIR:-${SD:-${TMPDIR:-/tmp}/.agentpool}}
# Absolute, since the pump works in its queue directory.
case $S in /*) ;; *) S=$PWD/$S;; esac
umask 077
[ -d "$S" ] || mkdir -p "$S" || exit 4
Q=$S/.session.$N
mkdir "$Q" "$Q/q" || exit 4
exec 3>&1 1>&2
if command -v setsid >/dev/null 2>&1; then M=setsid; else M=shared; fi
# Poll back-off of the pump when nothing happens; POSIX sleep only takes whole seconds.
if sleep 0.001 2>/dev/null; then
  ZS="0.002 0.002 0.002 0.004 0.004 0.008 0.016 0.032 0.064 0.128 0.25"
else
  ZS=1
fi
K=$S/.keeper-$AGENTPOOL_KEEPER_ID
if [ ! -s "$K" ]; then
  agentpool_keeper >"$Q/k"
  mv -f "$Q/k" "$K"
fi
# No `$(...)` in the pump: bash (5.2) runs a trap that is due while it parses a command
# substitution being expanded, the trap's own parse breaks that parse ("unexpected EOF while
# looking for matching `)'") and the error ended the pump's loop: no frame ever again. Counts
# go through a file and `read` instead.
pump() {
  trap 'w=1' USR1
  cd "$Q/q" || exit 4
  w=0; A=; B=; zi=0
  printf '%s H - %s %s\n' "$N" "$AGENTPOOL_PROTOCOL" "$M" >&3
  while :; do
    y=; R=
    for f in "$Q"/q/*; do
      [ -e "$f" ] || continue
      read -r c a b <"$f" || break
      k=${f##*/}; R="$R $k"
      case $c in
      W) A="$A $k"; eval "i_$k=\$a o_$k=\$b s_$k=0"; y=1;;
      U|C|E) printf '%s %s %s %s\n' "$N" "$c" "$a" "$b" >&3;;
      B) B=1;;
      Q) printf '%s B -\n' "$N" >&3; exit 0;;
      esac
    done
    # Queue entries are numbered files and the pump works in the queue: names without spaces.
    # shellcheck disable=SC2086
    [ -n "$R" ] && rm -f $R
    L=
    # shellcheck disable=SC2154 # i, o, s come from eval of i_<k>, o_<k>, s_<k> (queue entries).
    for k in $A; do
      eval "i=\$i_$k o=\$o_$k s=\$s_$k"
      d=$S/$i
      if [ "$s" = 0 ]; then
        if read -r p 2>/dev/null <"$d/pid"; then
          printf '%s S %s %s\n' "$N" "$i" "$p" >&3; s=1; y=1
        elif read -r kp 2>/dev/null <"$d/started"; then
          if ! kill -0 "$kp" 2>/dev/null && [ ! -s "$d/pid" ] && [ ! -s "$d/rc" ]; then
            printf '%s F %s -1 %s lost\n' "$N" "$i" "$o" >&3; y=1; continue
          fi
        fi
      fi
      if [ "$s" = 1 ]; then
        e=; read -r x r 2>/dev/null <"$d/rc" && e=1
        # Most trivial steps print nothing: no `wc` fork for an empty file.
        n=0
        if [ -s "$d/out" ]; then wc -c <"$d/out" >"$Q/n" 2>/dev/null && read -r n <"$Q/n" || n=0; fi
        while [ "$o" -lt "$n" ]; do
          if [ $((o % 65536)) = 0 ]; then
            dd if="$d/out" bs=65536 skip=$((o / 65536)) count=16 2>/dev/null >"$Q/c"
          else
            dd if="$d/out" bs=65536 skip=$((o / 65536)) count=16 2>/dev/null |
              tail -c +$((o % 65536 + 1)) >"$Q/c"
          fi
          m=0; wc -c <"$Q/c" >"$Q/n" && read -r m <"$Q/n" || m=0
          [ "$m" -gt 0 ] || break
          printf '%s O %s %s %s\n' "$N" "$i" "$o" "$m" >&3
          cat "$Q/c" >&3
          o=$((o + m)); y=1
        done
        if [ -n "$e" ]; then
          printf '%s F %s %s %s %s\n' "$N" "$i" "$x" "$o" "$r" >&3; y=1; continue
        fi
        read -r kp <"$d/started"
        if ! kill -0 "$kp" 2>/dev/null && [ ! -s "$d/rc" ]; then
          printf '%s F %s -1 %s lost\n' "$N" "$i" "$o" >&3; y=1; continue
        fi
      fi
      eval "o_$k=\$o s_$k=\$s"; L="$L $k"
    done
    A=$L
    if [ -n "$B" ] && [ -z "$A" ]; then printf '%s B -\n' "$N" >&3; exit 0; fi
    if [ -n "$y" ]; then zi=0; else zi=$((zi + 1)); fi
    # shellcheck disable=SC2086 # the list of delays, split on purpose.
    set -- $ZS; [ "$zi" -lt $# ] || zi=$(($# - 1)); shift "$zi"
    if [ "$w" = 0 ]; then sleep "$1" & sp=$!; wait "$sp"; kill "$sp" 2>/dev/null; fi
    w=0
  done
}
trap '' USR1
pump &
P=$!
trap - USR1
n=1000000
enq() { n=$((n + 1)); echo "$*" >"$Q/q/$n"; kill -USR1 "$P" 2>/dev/null; }
readn() {
  : >"$2"; rg=0
  while [ "$rg" -lt "$1" ]; do
    dd bs=$(($1 - rg)) count=1 2>/dev/null >>"$2"
    rh=$(($(wc -c <"$2")))
    [ "$rh" -gt "$rg" ] || return 1
    rg=$rh
  done
}
while IFS=' ' read -r c a b t g l s; do
  case $a in ''|-|.*|*[!A-Za-z0-9._-]*) v=;; *) v=1;; esac
  d=$S/$a
  case $c in
  run)
    case $l$s in ''|*[!0-9]*) enq E - badmsg; break;; esac
    if [ -z "$v" ] || [ -e "$d/started" ]; then
      readn "$s" "$Q/x" || break
      [ -n "$v" ] || { enq E - badid; continue; }
    else
      f=$S/.stage.$a.$$
      readn "$s" "$f" || break
      if [ "$M" = setsid ]; then
        setsid "$SH" "$K" "$d" "$t" "$g" "$f" "$l" "$SH" </dev/null >/dev/null 2>&1 3>&- &
      else
        "$SH" "$K" "$d" "$t" "$g" "$f" "$l" "$SH" </dev/null >/dev/null 2>&1 3>&- &
      fi
    fi
    enq W "$a" "$b";;
  resume)
    if [ -n "$v" ] && [ -e "$d/started" ]; then enq W "$a" "$b"; else enq U "$a"; fi;;
  cancel)
    # The cancel file also stops a step whose keeper is still starting, or starts later.
    if [ -z "$v" ]; then enq C - 0
    elif [ -e "$d/rc" ]; then enq C "$a" 0
    else
      [ -d "$d" ] || mkdir "$d" 2>/dev/null; : >"$d/cancel"
      read -r kp 2>/dev/null <"$d/started" && kill -USR1 "$kp" 2>/dev/null; enq C "$a" 1
    fi;;
  forget)
    [ -n "$v" ] && read -r x 2>/dev/null <"$d/rc" && rm -rf "$d";;
  clean)
    # The agent's build workspaces ($S/.ws/<agent>/<build>): all but the one named `b` go.
    # Names are checked like step ids, so nothing outside the agent's directory is touched.
    case $b in -|''|.*|*[!A-Za-z0-9._-]*) b=-;; esac
    if [ -n "$v" ] && [ -d "$S/.ws/$a" ]; then
      # A build may leave read-only directories (Go's module cache does): a non-root rm
      # cannot empty them, so they get their owner's write bit back first.
      for w in "$S/.ws/$a"/*; do
        [ -e "$w" ] && [ "${w##*/}" != "$b" ] && { chmod -R u+w -- "$w" 2>/dev/null; rm -rf -- "$w"; }
      done
    fi;;
  bye) break;;
  quit) enq Q; wait "$P"; rm -rf "$Q"; exit 0;;
  *) enq E - badmsg;;
  esac
done
enq B
wait "$P"
rm -rf "$Q"
exit 0
