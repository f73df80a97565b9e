#!/usr/bin/env bash
# Builds nodus' registry-free stand-in images from this machine's Debian packages:
#
#   nodus/postgres-standin:15   PostgreSQL 15 (postgresql-15), official-image entrypoint contract
#   nodus/redis-standin:7       Redis 7 (redis-server, redis-tools), official-image entrypoint contract
#
# Both are `FROM scratch` images holding the binaries, their shared libraries (found with ldd),
# a static busybox (/bin/sh and friends) and an entrypoint script from scripts/images/<name>/.
# Nothing is pulled from a registry.
#
# Usage: scripts/build-images.sh [--force] [postgres|redis]...
#   (no names)  build both
#   --force     rebuild even when the image exists and is up to date
#
# Idempotent: an image is skipped when it exists and its `io.nodus.standin.hash` label matches the
# hash of this script, the entrypoint scripts and the package versions; otherwise it is rebuilt.
# Needs root (or a working `docker` plus the packages already installed). Starts dockerd in the
# background when `docker info` fails and we are root. Progress goes to stderr.
set -euo pipefail

PG_MAJOR=15
PG_IMAGE="nodus/postgres-standin:${PG_MAJOR}"
REDIS_IMAGE="nodus/redis-standin:7"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="${SCRIPT_DIR}/$(basename "${BASH_SOURCE[0]}")"
IMAGES_DIR="${SCRIPT_DIR}/images"

log() { printf 'build-images: %s\n' "$*" >&2; }
die() {
	printf 'build-images: error: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,18p' "$SELF" | sed 's/^# \{0,1\}//' >&2
}

FORCE=0
TARGETS=()
while [ "$#" -gt 0 ]; do
	case "$1" in
	--force | -f) FORCE=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	postgres | redis) TARGETS+=("$1") ;;
	*)
		usage
		die "unknown argument: $1"
		;;
	esac
	shift
done
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=(postgres redis)

# ---------------------------------------------------------------------------------------------
# Prerequisites

ensure_docker() {
	command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed"
	if docker info >/dev/null 2>&1; then
		return
	fi
	if [ "$(id -u)" != 0 ] || ! command -v dockerd >/dev/null 2>&1; then
		die "the Docker engine is not reachable (docker info failed) and dockerd cannot be started from here: $(docker info 2>&1 | tail -n 1)"
	fi
	log "docker info failed; starting dockerd in the background (log: /var/log/nodus-dockerd.log)"
	nohup setsid dockerd >/var/log/nodus-dockerd.log 2>&1 </dev/null &
	local i
	for i in $(seq 1 60); do
		if docker info >/dev/null 2>&1; then
			log "dockerd is up"
			return
		fi
		sleep 1
	done
	die "dockerd did not come up within 60 s; see /var/log/nodus-dockerd.log"
}

pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

APT_UPDATED=0
ensure_packages() {
	local missing=() p
	for p in "$@"; do
		pkg_installed "$p" || missing+=("$p")
	done
	[ "${#missing[@]}" -eq 0 ] && return
	[ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}; install them (apt-get install -y ${missing[*]}) or run as root"
	command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and apt-get is not available"
	if [ "$APT_UPDATED" = 0 ]; then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update >&2 || die "apt-get update failed"
		APT_UPDATED=1
	fi
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"
}

pkg_versions() {
	dpkg-query -W -f='${Package}=${Version}\n' "$@" 2>/dev/null | sort
}

# Hash of everything that determines an image's content.
content_hash() {
	local name=$1
	shift
	{
		cat "$SELF"
		cat "${IMAGES_DIR}/${name}"/*
		pkg_versions "$@"
		uname -m
	} | sha256sum | cut -d' ' -f1
}

# 0 when the image exists with this hash.
image_up_to_date() {
	local image=$1 hash=$2 have
	have=$(docker image inspect -f '{{ index .Config.Labels "io.nodus.standin.hash" }}' "$image" 2>/dev/null) || return 1
	[ "$have" = "$hash" ]
}

# ---------------------------------------------------------------------------------------------
# Root filesystem assembly

ROOT=""
CLEANUP=()
cleanup() {
	[ "${#CLEANUP[@]}" -eq 0 ] || rm -rf "${CLEANUP[@]}"
}
trap cleanup EXIT

# copy_path SRC: copies SRC (a file, resolving symlinks) to the same path under $ROOT.
copy_file() {
	local src=$1 dst
	[ -e "$src" ] || die "expected file $src is missing"
	dst="${ROOT}${src}"
	mkdir -p "$(dirname "$dst")"
	cp -L --preserve=mode "$src" "$dst"
}

# copy_tree DIR: copies a directory tree as is (symlinks stay symlinks).
copy_tree() {
	local src=$1
	[ -d "$src" ] || die "expected directory $src is missing"
	mkdir -p "${ROOT}$(dirname "$src")"
	cp -a "$src" "${ROOT}$(dirname "$src")/"
}

# copy_libs FILE...: copies the shared libraries FILE needs (and the dynamic loader) into the
# canonical (symlink-resolved) directory under $ROOT, under the name ldd reports.
copy_libs() {
	local f out line lib dir
	for f in "$@"; do
		if ! out=$(ldd "$f" 2>&1); then
			case "$out" in
			*"not a dynamic executable"* | *"statically linked"*) continue ;;
			*) die "ldd $f failed: $out" ;;
			esac
		fi
		if grep -q 'not found' <<<"$out"; then
			die "$f needs libraries that are not installed: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
		fi
		while read -r line; do
			case "$line" in
			*"=> /"*) lib=$(sed -E 's/.*=> ([^ ]+).*/\1/' <<<"$line") ;;
			/*) lib=${line%% *} ;;
			*) continue ;;
			esac
			dir=$(readlink -f "$(dirname "$lib")")
			if [ ! -e "${ROOT}${dir}/$(basename "$lib")" ]; then
				mkdir -p "${ROOT}${dir}"
				cp -L --preserve=mode "$lib" "${ROOT}${dir}/$(basename "$lib")"
			fi
		done <<<"$out"
	done
}

# Merged-/usr layout like Debian, busybox applets, ld.so cache, nsswitch, /tmp.
base_rootfs() {
	mkdir -p "$ROOT"/{usr/lib/x86_64-linux-gnu,usr/lib64,usr/bin,usr/sbin,etc,tmp,root,dev,proc,sys}
	# Keep Debian's merged-/usr symlinks (the loader path in every binary is /lib64/...).
	local d
	for d in lib lib64 bin sbin; do
		if [ -L "/$d" ]; then
			ln -sfn "$(readlink "/$d")" "$ROOT/$d"
		else
			mkdir -p "$ROOT/$d"
		fi
	done
	chmod 1777 "$ROOT/tmp"
	chmod 0700 "$ROOT/root"

	local bb
	bb=$(command -v busybox) || die "busybox is not installed"
	file -L "$bb" 2>/dev/null | grep -q 'statically linked' || ldd "$bb" 2>&1 | grep -q 'not a dynamic' ||
		die "$bb is not statically linked (install busybox-static)"
	cp -L "$bb" "$ROOT/usr/bin/busybox"
	local applet
	while read -r applet; do
		[ -n "$applet" ] || continue
		local target="$ROOT/$(readlink -f "/$(dirname "$applet")" | sed 's#^/##')/$(basename "$applet")"
		[ -e "$target" ] || [ -L "$target" ] || ln -s /usr/bin/busybox "$target"
	done < <("$bb" --list-full)

	cat >"$ROOT/etc/nsswitch.conf" <<-'EOF'
		passwd:    files
		group:     files
		shadow:    files
		hosts:     files dns
		networks:  files
		protocols: files
		services:  files
	EOF
	printf '/usr/lib/x86_64-linux-gnu\n/usr/local/lib\n' >"$ROOT/etc/ld.so.conf"
	# Locale used by initdb and friends (Debian ships C.utf8 with libc-bin).
	if [ -d /usr/lib/locale/C.utf8 ]; then
		copy_tree /usr/lib/locale/C.utf8
	fi
}

finish_rootfs() {
	ldconfig -r "$ROOT" 2>/dev/null || log "warning: ldconfig -r failed; relying on the loader's default paths"
}

# ---------------------------------------------------------------------------------------------
# Images

docker_build() {
	local image=$1 hash=$2 ctx=$3
	local old_id
	old_id=$(docker image inspect -f '{{ .Id }}' "$image" 2>/dev/null || true)
	log "docker build -t $image ($ctx)"
	docker build \
		--label io.nodus.standin=true \
		--label "io.nodus.standin.hash=${hash}" \
		-t "$image" "$ctx" >&2 || die "docker build of $image failed"
	# Drop the image this one replaces (kept when a container still uses it).
	if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{ .Id }}' "$image")" ]; then
		docker rmi "$old_id" >/dev/null 2>&1 && log "removed the previous $image ($old_id)" || true
	fi
	log "built $image ($(docker image inspect -f '{{ .Size }}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
}

build_postgres() {
	local pkgs=("postgresql-${PG_MAJOR}" busybox-static libc-bin tzdata)
	ensure_packages "${pkgs[@]}"
	local hash
	hash=$(content_hash postgres "${pkgs[@]}")
	if [ "$FORCE" = 0 ] && image_up_to_date "$PG_IMAGE" "$hash"; then
		log "$PG_IMAGE is up to date; skipping (use --force to rebuild)"
		return
	fi

	local bindir=/usr/lib/postgresql/${PG_MAJOR}/bin
	local libdir=/usr/lib/postgresql/${PG_MAJOR}/lib
	local sharedir=/usr/share/postgresql/${PG_MAJOR}
	[ -x "$bindir/postgres" ] || die "$bindir/postgres is missing (is postgresql-${PG_MAJOR} installed?)"

	local ctx
	ctx=$(mktemp -d "${TMPDIR:-/tmp}/nodus-standin-postgres.XXXXXX")
	CLEANUP+=("$ctx")
	ROOT="$ctx/rootfs"
	log "assembling the postgres root filesystem in $ROOT"
	base_rootfs

	local bins=(postgres initdb pg_ctl pg_isready psql pg_dump pg_dumpall pg_restore pg_controldata
		pg_resetwal pg_basebackup pg_waldump pg_checksums createdb createuser dropdb dropuser vacuumdb)
	local b files=()
	for b in "${bins[@]}"; do
		if [ -x "$bindir/$b" ]; then
			copy_file "$bindir/$b"
			files+=("$bindir/$b")
		elif [ "$b" = postgres ] || [ "$b" = initdb ] || [ "$b" = pg_ctl ] || [ "$b" = psql ] ||
			[ "$b" = pg_isready ] || [ "$b" = pg_dump ] || [ "$b" = pg_dumpall ] || [ "$b" = pg_controldata ]; then
			die "$bindir/$b is missing"
		fi
	done
	ln -s postgres "$ROOT$bindir/postmaster"

	# Server modules and contrib extensions; JIT (llvmjit, ~100 MB of LLVM) is left out, so
	# postgres runs with JIT unavailable (it silently falls back to interpretation).
	mkdir -p "$ROOT$libdir"
	local so
	for so in "$libdir"/*.so; do
		case "$(basename "$so")" in llvmjit*.so) continue ;; esac
		cp -L --preserve=mode "$so" "$ROOT$libdir/"
		files+=("$so")
	done
	copy_libs "${files[@]}"

	copy_tree "$sharedir"
	local ext
	for ext in uuid-ossp pg_trgm pgcrypto hstore citext; do
		[ -f "$sharedir/extension/$ext.control" ] || log "note: extension $ext is not in the Debian package; the image lacks it"
	done
	# Like the official image: listen on all interfaces by default.
	sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$ROOT$sharedir/postgresql.conf.sample"
	grep -q "^listen_addresses = '\*'" "$ROOT$sharedir/postgresql.conf.sample" ||
		die "could not set listen_addresses in postgresql.conf.sample"
	# Time zone data (Debian builds with --with-system-tzdata=/usr/share/zoneinfo).
	copy_tree /usr/share/zoneinfo

	cat >"$ROOT/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/bin/sh
		postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/sh
		nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
	EOF
	cat >"$ROOT/etc/group" <<-'EOF'
		root:x:0:
		postgres:x:999:
		nogroup:x:65534:
	EOF
	mkdir -p "$ROOT/var/lib/postgresql/data" "$ROOT/var/run/postgresql" "$ROOT/docker-entrypoint-initdb.d" \
		"$ROOT/usr/local/bin"
	install -m 0755 "$IMAGES_DIR/postgres/docker-entrypoint.sh" "$ROOT/usr/local/bin/docker-entrypoint.sh"
	ln -s usr/local/bin/docker-entrypoint.sh "$ROOT/docker-entrypoint.sh"
	finish_rootfs

	local version
	version=$("$bindir/postgres" --version | sed -nE 's/.* ([0-9][0-9.]*).*/\1/p')
	[ -n "$version" ] || die "could not read the version from postgres --version"
	cat >"$ctx/Dockerfile" <<-EOF
		FROM scratch
		COPY rootfs/ /
		RUN ["/bin/sh", "-c", "chown -R 999:999 /var/lib/postgresql /var/run/postgresql && chmod 3777 /var/run/postgresql && chmod 0700 /var/lib/postgresql/data && chmod 1777 /tmp && /usr/lib/postgresql/${PG_MAJOR}/bin/postgres --version && /usr/lib/postgresql/${PG_MAJOR}/bin/psql --version"]
		ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/${PG_MAJOR}/bin \\
		    LANG=C.UTF-8 \\
		    PG_MAJOR=${PG_MAJOR} \\
		    PG_VERSION=${version} \\
		    PGDATA=/var/lib/postgresql/data
		VOLUME /var/lib/postgresql/data
		ENTRYPOINT ["docker-entrypoint.sh"]
		STOPSIGNAL SIGINT
		EXPOSE 5432
		CMD ["postgres"]
	EOF
	docker_build "$PG_IMAGE" "$hash" "$ctx"
}

build_redis() {
	local pkgs=(redis-server redis-tools busybox-static libc-bin)
	ensure_packages "${pkgs[@]}"
	local hash
	hash=$(content_hash redis "${pkgs[@]}")
	if [ "$FORCE" = 0 ] && image_up_to_date "$REDIS_IMAGE" "$hash"; then
		log "$REDIS_IMAGE is up to date; skipping (use --force to rebuild)"
		return
	fi
	local server cli
	server=$(readlink -f /usr/bin/redis-server)
	cli=$(readlink -f /usr/bin/redis-cli)
	[ -x "$server" ] || die "/usr/bin/redis-server is missing"
	[ -x "$cli" ] || die "/usr/bin/redis-cli is missing"

	local ctx
	ctx=$(mktemp -d "${TMPDIR:-/tmp}/nodus-standin-redis.XXXXXX")
	CLEANUP+=("$ctx")
	ROOT="$ctx/rootfs"
	log "assembling the redis root filesystem in $ROOT"
	base_rootfs
	cp -L --preserve=mode "$server" "$ROOT/usr/bin/redis-server"
	cp -L --preserve=mode "$cli" "$ROOT/usr/bin/redis-cli"
	ln -s redis-server "$ROOT/usr/bin/redis-check-aof"
	ln -s redis-server "$ROOT/usr/bin/redis-check-rdb"
	ln -s redis-server "$ROOT/usr/bin/redis-sentinel"
	copy_libs "$server" "$cli"

	cat >"$ROOT/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/bin/sh
		redis:x:999:999:redis:/data:/bin/sh
		nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
	EOF
	cat >"$ROOT/etc/group" <<-'EOF'
		root:x:0:
		redis:x:999:
		nogroup:x:65534:
	EOF
	mkdir -p "$ROOT/data" "$ROOT/usr/local/bin"
	install -m 0755 "$IMAGES_DIR/redis/docker-entrypoint.sh" "$ROOT/usr/local/bin/docker-entrypoint.sh"
	finish_rootfs

	local version
	version=$(/usr/bin/redis-server --version | sed -nE 's/.* v=([0-9][^ ]*).*/\1/p')
	[ -n "$version" ] || die "could not read the redis version from redis-server --version"
	cat >"$ctx/Dockerfile" <<-EOF
		FROM scratch
		COPY rootfs/ /
		RUN ["/bin/sh", "-c", "chown 999:999 /data && chmod 1777 /tmp && redis-server --version && redis-cli --version"]
		ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
		    REDIS_VERSION=${version}
		VOLUME /data
		WORKDIR /data
		ENTRYPOINT ["docker-entrypoint.sh"]
		EXPOSE 6379
		CMD ["redis-server"]
	EOF
	docker_build "$REDIS_IMAGE" "$hash" "$ctx"
}

# ---------------------------------------------------------------------------------------------

[ "$(uname -m)" = x86_64 ] || log "warning: only tested on x86_64 (this is $(uname -m))"
# One build at a time (tests call this script in parallel); a waiting run then finds the images
# up to date and skips.
LOCK_FILE="${TMPDIR:-/tmp}/nodus-build-images.lock"
if command -v flock >/dev/null 2>&1; then
	exec 9>"$LOCK_FILE"
	flock -n 9 || {
		log "another build-images run holds $LOCK_FILE; waiting"
		flock 9
	}
fi
ensure_docker
# The classic builder handles `FROM scratch` + RUN fine; use it when buildx is not installed.
if ! docker buildx version >/dev/null 2>&1; then
	export DOCKER_BUILDKIT=0
fi

for t in "${TARGETS[@]}"; do
	case "$t" in
	postgres) build_postgres ;;
	redis) build_redis ;;
	esac
done
log "done"
