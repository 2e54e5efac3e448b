#!/usr/bin/env bash
# Builds one container image per vouch role (make images), reproducibly:
#
#   - the roles that never load a PKCS#11 module (ingest, store, cdn,
#     cleanup, federate, registry-sync, migrate) from a static build
#     (CGO_ENABLED=0: internal/p11 then refuses every module call), FROM
#     scratch, with only the binary, Debian's CA bundle and a numeric user;
#   - the roles that sign through PKCS#11 (all, backoffice, aggregate,
#     transparency) from the cgo build, on a Debian bookworm base made here
#     from Debian's packages by mmdebstrap (no image registry is needed),
#     with no module in it: the operator mounts the HSM's module.
#
# Every image runs `vouch ROLE` (transparency: `vouch transparency log`)
# as UID:GID 10001:10001. The binary is built
# with -trimpath, -buildvcs=false and no build id; file times are set to
# SOURCE_DATE_EPOCH (the last commit's time by default), so the layers are
# the same bytes from the same commit. The Debian rootfs is cached in
# $XDG_CACHE_HOME/vouch-images (~/.cache/vouch-images) keyed by its package
# list, so only the first run pays for mmdebstrap.
#
# Uses the docker daemon of DOCKER_HOST (the default one otherwise).
# Prints the images it built, one "name size" a line.
set -euo pipefail

cd "$(dirname "$0")/.."

static_roles=(ingest store cdn cleanup federate registry-sync migrate)
cgo_roles=(all backoffice aggregate transparency)
uid=10001
suite=bookworm
# Changing this list changes the cache key, and so the base.
debian_packages=ca-certificates,tzdata

log() { printf 'images: %s\n' "$*" >&2; }

for tool in docker mmdebstrap go; do
	command -v "$tool" >/dev/null || { log "$tool is missing: run make deps"; exit 1; }
done

version=${VOUCH_VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vouch-images
mkdir -p "$cache"

# The Debian base: its key is the suite, variant, package list and user;
# a fixed SOURCE_DATE_EPOCH inside makes mmdebstrap's output depend only on
# the packages' versions.
key=$(printf '%s\n' "$suite" essential "$debian_packages" "$uid" v1 | sha256sum | cut -c1-16)
rootfs=$cache/debian-$suite-$key.tar
if [[ ! -s $rootfs ]]; then
	log "making the Debian $suite base with mmdebstrap ($debian_packages): about a minute and a half, once"
	rm -f "$rootfs.part.tar"
	SOURCE_DATE_EPOCH=1700000000 mmdebstrap --quiet --variant=essential --include="$debian_packages" \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--customize-hook="echo 'vouch:x:$uid:$uid:vouch:/nonexistent:/usr/sbin/nologin' >> \"\$1/etc/passwd\"" \
		--customize-hook="echo 'vouch:x:$uid:' >> \"\$1/etc/group\"" \
		--customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
		"$suite" "$rootfs.part.tar"
	mv "$rootfs.part.tar" "$rootfs"
fi
base=vouch-debian-base:$key
if ! docker image inspect "$base" >/dev/null 2>&1; then
	log "importing $base"
	docker import --change "USER $uid:$uid" "$rootfs" "$base" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The CA bundle of the scratch images is Debian's, from the same base.
mkdir -p "$work/static/etc/ssl/certs" "$work/cgo"
tar -xOf "$rootfs" ./etc/ssl/certs/ca-certificates.crt >"$work/static/etc/ssl/certs/ca-certificates.crt"

build() { # build CGO OUT
	CGO_ENABLED=$1 go build -trimpath -buildvcs=false -tags timetzdata \
		-ldflags "-s -w -buildid= -X main.version=$version" -o "$2" ./cmd/vouch
}
log "building vouch $version (static and cgo)"
build 0 "$work/static/vouch" &
static_pid=$!
build 1 "$work/cgo/vouch"
wait "$static_pid"
find "$work" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# One image with the binary per kind, then each role's on it: FROM it, its
# command, no build context to send again.
docker_build() { # docker_build ARGS...: quiet unless it fails
	local out
	if ! out=$(DOCKER_BUILDKIT=0 docker build -q "$@" 2>&1); then
		printf '%s\n' "$out" >&2
		return 1
	fi
}
binary_image() { # binary_image NAME CONTEXT FROM
	local name=$1 dir=$2 from=$3
	{
		echo "FROM $from"
		[[ $from == scratch ]] && echo "COPY etc /etc"
		echo "COPY vouch /vouch"
		echo "USER $uid:$uid"
	} >"$dir/Dockerfile"
	docker_build -t "$name" "$dir"
}
# A role's command: `vouch ROLE`, but for the transparency log's writer,
# which is `vouch transparency log`.
role_command() { # role_command ROLE: the ENTRYPOINT's JSON array
	case $1 in
	transparency) echo '["/vouch", "transparency", "log"]' ;;
	*) echo "[\"/vouch\", \"$1\"]" ;;
	esac
}
role_image() { # role_image ROLE FROM
	local role=$1 from=$2
	printf '%s\n' "FROM $from" \
		"LABEL org.opencontainers.image.title=vouch-$role org.opencontainers.image.version=$version org.opencontainers.image.created=@$SOURCE_DATE_EPOCH" \
		"ENTRYPOINT $(role_command "$role")" | docker_build -t "vouch-$role:$version" -t "vouch-$role:latest" -
	printf 'vouch-%s:%s %s\n' "$role" "$version" "$(docker image inspect -f '{{.Size}}' "vouch-$role:$version")"
}
binary_image "vouch-bin-static:$version" "$work/static" scratch
binary_image "vouch-bin-cgo:$version" "$work/cgo" "$base"
for r in "${static_roles[@]}"; do role_image "$r" "vouch-bin-static:$version"; done
for r in "${cgo_roles[@]}"; do role_image "$r" "vouch-bin-cgo:$version"; done
