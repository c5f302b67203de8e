#!/usr/bin/env bash
# Installs the system tools Loom's demo, tests and benchmarks use, if any is
# missing. Idempotent; needs root (apt-get) only when something is missing.
# Arguments name optional tools to check as well: perf (make bench's kernel
# profile), gcc (make test-race: the race detector needs cgo).
set -euo pipefail

# tool -> Debian package
declare -A pkgs=(
	[ip]=iproute2
	[bridge]=iproute2
	[ping]=iputils-ping
	[nsenter]=util-linux
	[pgrep]=procps
	[nft]=nftables
	[iptables]=iptables
	[tc]=iproute2
	[iperf3]=iperf3
	[bash]=bash
)
declare -A optional=(
	[perf]=linux-perf
	[gcc]=gcc
)
for tool in "$@"; do
	if [ -z "${optional[$tool]:-}" ]; then
		echo "deps: unknown optional tool $tool" >&2
		exit 1
	fi
	pkgs[$tool]=${optional[$tool]}
done
missing=()
for tool in "${!pkgs[@]}"; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("${pkgs[$tool]}")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
# shellcheck disable=SC2207
missing=($(printf '%s\n' "${missing[@]}" | sort -u))
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${missing[*]}; run as root so they can be installed with apt-get" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
