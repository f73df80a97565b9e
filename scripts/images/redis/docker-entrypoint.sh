#!/bin/sh
# nodus stand-in for the official redis image's docker-entrypoint.sh, for busybox sh.
#
# Like the official image: a first argument that is a flag or a *.conf file runs redis-server
# with it; started as root, /data ownership is fixed and redis-server runs as the redis user.
# The official image compiles redis with protected mode off; this image passes
# `--protected-mode no` right after the (optional) config file instead (unless that file sets
# protected-mode itself), so a later `--protected-mode yes` on the command line still wins.
set -eu

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
	find . \! -user redis -exec chown redis:redis '{}' +
	export HOME=/data
	exec su -p -s /bin/sh -c 'exec "$0" "$@"' -- redis "$0" "$@"
fi

if [ "$1" = redis-server ]; then
	shift
	if [ "$#" -gt 0 ] && { [ "$1" = - ] || [ "${1#-}" = "$1" ]; }; then
		conf=$1
		shift
		if [ "$conf" != - ] && grep -Eqi '^[[:space:]]*protected-mode[[:space:]]' "$conf" 2>/dev/null; then
			# The config file decides, as it would with the official image.
			set -- redis-server "$conf" "$@"
		else
			set -- redis-server "$conf" --protected-mode no "$@"
		fi
	else
		set -- redis-server --protected-mode no "$@"
	fi
fi

# Like the official image: a default umask becomes 0077 so dumps are not world readable.
if [ "$(umask)" = 0022 ]; then
	umask 0077
fi

exec "$@"
