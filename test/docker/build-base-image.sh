#!/usr/bin/env bash
# Builds, once per machine, the local stand-in for the Dockerfile's base image (docker.io/library/node:20-bookworm-slim):
# no image registry is reachable here, so a Debian bookworm root file system is made with debootstrap and this
# machine's own Node.js (the version the project targets; Debian's nodejs package is older) and npm are put into it.
# The result is cached in buildah's storage under the same name, so later runs skip all of this.
set -euo pipefail
TAG=${1:-docker.io/library/node:20-bookworm-slim}
B=(buildah --storage-driver vfs)

if "${B[@]}" inspect --type image "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG already built"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "debootstrap (minbase bookworm) into $work/rootfs"
debootstrap --variant=minbase bookworm "$work/rootfs" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }

node_bin=$(command -v node)
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
install -D -m 0755 "$node_bin" "$work/rootfs/usr/local/bin/node"
mkdir -p "$work/rootfs/usr/local/lib/node_modules"
cp -a "$npm_dir" "$work/rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$work/rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$work/rootfs/usr/local/bin/npx"
# The official image carries a CA bundle; this machine's own one is what reaches the npm registry from here.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  # npm (not Node's built-in list) must trust it, as this machine's own npm does.
  install -d "$work/rootfs/usr/local/etc"
  echo 'cafile=/etc/ssl/certs/ca-certificates.crt' >"$work/rootfs/usr/local/etc/npmrc"
fi
rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*

tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
printf 'FROM scratch\nADD rootfs.tar /\nENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin\nCMD ["node"]\n' >"$work/Dockerfile"
"${B[@]}" bud --isolation chroot --pull=never -t "$TAG" -f "$work/Dockerfile" "$work"
echo "base image $TAG built"
