#!/usr/bin/env bash
# make compose-demo: three loomd "nodes" as containers from the project's
# image on one compose network, two pods per node, every ordered pod pair
# pinged, one summary line, everything torn down (also on failure or
# interrupt). Needs Docker with docker-compose; pulls nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

compose=(docker-compose)
if ! command -v docker-compose >/dev/null 2>&1; then
	compose=(docker compose)
fi
project="loomdemo$$"
work=$(mktemp -d)
dc() { LOOM_KEY_FILE="$work/gossip.key" LOOM_IMAGE="${LOOM_IMAGE:-loom-compose:dev}" "${compose[@]}" -p "$project" -f deploy/compose/docker-compose.yml "$@"; }
cleanup() {
	dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nodes=(node1 node2 node3)
bin/loomctl keygen > "$work/gossip.key"
echo "compose-demo: starting ${#nodes[@]} nodes (project $project)"
dc up -d >/dev/null
for n in "${nodes[@]}"; do
	if ! dc exec -T "$n" podctl wait-ready $(( ${#nodes[@]} - 1 )) 90s; then
		dc logs --tail 30 "$n" >&2 || true
		exit 1
	fi
done

declare -A ip
pods=()
for n in "${nodes[@]}"; do
	for p in 1 2; do
		pod="$n-pod$p"
		ip[$pod]=$(dc exec -T "$n" podctl add "$pod" | tr -d '\r')
		pods+=("$pod")
		echo "compose-demo: $pod on $n has ${ip[$pod]}"
	done
done

ok=0
total=0
for src in "${pods[@]}"; do
	node=${src%-pod*}
	targets=()
	for dst in "${pods[@]}"; do
		[ "$src" = "$dst" ] || targets+=("${ip[$dst]}")
	done
	out=$(dc exec -T "$node" podctl ping-all "$src" "${targets[@]}" | tr -d '\r' || true)
	total=$(( total + ${#targets[@]} ))
	ok=$(( ok + $(grep -c '^ok ' <<<"$out" || true) ))
	grep '^fail ' <<<"$out" | sed "s/^/compose-demo: $src: /" || true
done
echo "compose-demo: $ok/$total pod pairs reachable"
[ "$ok" -eq "$total" ]
