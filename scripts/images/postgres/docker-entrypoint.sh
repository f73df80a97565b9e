#!/bin/sh
# nodus stand-in for the official postgres image's docker-entrypoint.sh, for busybox sh.
#
# Contract (same as the official image):
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (default
#   postgres), POSTGRES_DB (default = user), POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR,
#   POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), *_FILE variants of the first four.
#   /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz|*.sql.xz run ONLY when PGDATA is empty.
#   Started as root: fixes PGDATA ownership/mode and drops to the postgres user.
set -eu
set -o pipefail 2>/dev/null || :

# file_env VAR [DEFAULT]: VAR, or the contents of the file named by VAR_FILE, or DEFAULT.
file_env() {
	fe_var=$1
	fe_file_var="${1}_FILE"
	fe_def=${2:-}
	eval "fe_val=\${$fe_var:-}"
	eval "fe_file=\${$fe_file_var:-}"
	if [ -n "$fe_val" ] && [ -n "$fe_file" ]; then
		echo "error: both $fe_var and $fe_file_var are set (but are exclusive)" >&2
		exit 1
	fi
	if [ -n "$fe_file" ]; then
		fe_val=$(cat "$fe_file")
	elif [ -z "$fe_val" ]; then
		fe_val=$fe_def
	fi
	export "$fe_var=$fe_val"
	unset "$fe_file_var"
}

# psql against the temporary (socket-only) server.
process_sql() {
	PGHOST= PGHOSTADDR= psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc \
		--dbname "$POSTGRES_DB" "$@"
}

process_init_files() {
	echo
	for f in /docker-entrypoint-initdb.d/*; do
		[ -e "$f" ] || continue
		case "$f" in
		*.sh)
			if [ -x "$f" ]; then
				echo "$0: running $f"
				"$f"
			else
				echo "$0: sourcing $f"
				. "$f"
			fi
			;;
		*.sql)
			echo "$0: running $f"
			process_sql -f "$f"
			echo
			;;
		*.sql.gz)
			echo "$0: running $f"
			gunzip -c "$f" | process_sql
			echo
			;;
		*.sql.xz)
			echo "$0: running $f"
			xzcat "$f" | process_sql
			echo
			;;
		*) echo "$0: ignoring $f" ;;
		esac
	done
}

# If the first argument looks like a flag, run postgres with it.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
	set -- postgres "$@"
fi

if [ "$1" = postgres ]; then
	: "${PGDATA:=/var/lib/postgresql/data}"
	export PGDATA

	if [ "$(id -u)" = 0 ]; then
		mkdir -p "$PGDATA"
		find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
		chmod 0700 "$PGDATA"
		mkdir -p /var/run/postgresql
		chown postgres:postgres /var/run/postgresql
		chmod 3777 /var/run/postgresql
		if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
			mkdir -p "$POSTGRES_INITDB_WALDIR"
			find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres:postgres '{}' +
			chmod 0700 "$POSTGRES_INITDB_WALDIR"
		fi
		export HOME=/var/lib/postgresql
		# Re-run this script as postgres (busybox su execs, so postgres ends up as PID 1).
		exec su -p -s /bin/sh -c 'exec "$0" "$@"' -- postgres "$0" "$@"
	fi

	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		file_env POSTGRES_PASSWORD
		file_env POSTGRES_USER postgres
		file_env POSTGRES_DB "$POSTGRES_USER"
		file_env POSTGRES_INITDB_ARGS
		: "${POSTGRES_HOST_AUTH_METHOD:=}"

		if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
			cat >&2 <<-'EOE'
				Error: Database is uninitialized and superuser password is not specified.
				       You must specify POSTGRES_PASSWORD to a non-empty value for the
				       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

				       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
				       connections without a password. This is *not* recommended.
			EOE
			exit 1
		fi
		if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
			echo 'WARNING: POSTGRES_HOST_AUTH_METHOD has been set to "trust". All connections are allowed without a password.' >&2
		fi

		mkdir -p "$PGDATA"
		chmod 0700 "$PGDATA" 2>/dev/null || :

		if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
			POSTGRES_INITDB_ARGS="--waldir $POSTGRES_INITDB_WALDIR $POSTGRES_INITDB_ARGS"
		fi
		if [ -n "$POSTGRES_PASSWORD" ]; then
			# printf is a builtin: the password never shows up in a process list.
			printf '%s\n' "$POSTGRES_PASSWORD" |
				eval 'initdb --username="$POSTGRES_USER" --pwfile=/dev/stdin '"$POSTGRES_INITDB_ARGS"
		else
			eval 'initdb --username="$POSTGRES_USER" '"$POSTGRES_INITDB_ARGS"
		fi

		auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
		printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

		export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
		PGUSER="${PGUSER:-$POSTGRES_USER}" \
			pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start

		if [ "$POSTGRES_DB" != postgres ]; then
			exists=$(POSTGRES_DB=postgres process_sql --set db="$POSTGRES_DB" --tuples-only --no-align <<-'EOSQL'
				SELECT 1 FROM pg_database WHERE datname = :'db' ;
			EOSQL
			)
			if [ -z "$exists" ]; then
				POSTGRES_DB=postgres process_sql --set db="$POSTGRES_DB" <<-'EOSQL'
					CREATE DATABASE :"db" ;
				EOSQL
				echo
			fi
		fi

		process_init_files

		PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -m fast -w stop
		unset PGPASSWORD

		echo
		echo 'PostgreSQL init process complete; ready for start up.'
		echo
	else
		echo
		echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
		echo
	fi
fi

exec "$@"
