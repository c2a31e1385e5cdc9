#!/usr/bin/env bash
# Installs the Debian packages weft builds and runs with. Idempotent: only missing packages are
# installed, and `apt-get update` runs only when something is missing.
set -euo pipefail
pkgs=(clang llvm libbpf-dev bpftool iproute2 nftables iptables iperf3 haproxy tcpdump curl openssl libnghttp2-dev
      python3 make g++ procps psmisc util-linux prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "weft setup: missing Debian packages (${missing[*]}) and not root; run as root or install them" >&2
  exit 1
fi
echo "weft setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
