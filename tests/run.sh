#!/usr/bin/env bash
# The project's test command (CI runs exactly this): make sure PostgreSQL and Redis answer,
# check formatting and lints, then run the whole suite on SQLite and on PostgreSQL.
#
#   bash tests/run.sh                  everything
#   bash tests/run.sh --services-only  only make sure PostgreSQL and Redis answer
#
# Environment:
#   RENKEI_TEST_PG_URL     PostgreSQL the postgres phase uses (default postgres://postgres@127.0.0.1:5432/postgres)
#   RENKEI_TEST_REDIS_URL  Redis both phases use (default redis://127.0.0.1:6379)
#   RENKEI_TEST_WAIT_SECS  how long to wait for each service to answer (default 30)
# Services at the default local addresses are started (and, as root, installed) when they do not
# answer; services anywhere else are only checked.
set -euo pipefail

cd "$(dirname "$0")/.."

services_only=0
for arg in "$@"; do
    case "$arg" in
        --services-only) services_only=1 ;;
        -h | --help)
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "run.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

export RENKEI_TEST_PG_URL="${RENKEI_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export RENKEI_TEST_REDIS_URL="${RENKEI_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
wait_secs="${RENKEI_TEST_WAIT_SECS:-30}"

# Cargo installed by rustup but not on PATH (non-login shells on CI machines).
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

# ---------------------------------------------------------------------------------------------
# Output and timing
# ---------------------------------------------------------------------------------------------
phase_names=()
phase_secs=()
phase_status=()
current_phase=""
current_start=0
run_start=$SECONDS

header() {
    echo
    echo "==== $* ===="
}

info() { echo "run.sh: $*"; }

die() {
    echo "run.sh: ERROR: $*" >&2
    exit 1
}

begin_phase() {
    end_phase ok
    current_phase="$1"
    current_start=$SECONDS
    header "$1"
}

end_phase() {
    if [ -n "$current_phase" ]; then
        phase_names+=("$current_phase")
        phase_secs+=($((SECONDS - current_start)))
        phase_status+=("$1")
        current_phase=""
    fi
}

summary() {
    local rc=$?
    end_phase "$([ "$rc" -eq 0 ] && echo ok || echo FAILED)"
    [ "${#phase_names[@]}" -gt 0 ] || exit "$rc"
    echo
    echo "==== timing ===="
    local i
    for i in "${!phase_names[@]}"; do
        printf '  %-40s %6ss  %s\n' "${phase_names[$i]}" "${phase_secs[$i]}" "${phase_status[$i]}"
    done
    printf '  %-40s %6ss  %s\n' "total" "$((SECONDS - run_start))" \
        "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)")"
    exit "$rc"
}
trap summary EXIT

# ---------------------------------------------------------------------------------------------
# Step a: PostgreSQL and Redis
# ---------------------------------------------------------------------------------------------

# Sets url_host and url_port from a URL like scheme://user:pw@host:port/path?query.
parse_url() {
    local rest="${1#*://}" default_port="$2"
    rest="${rest%%/*}"
    rest="${rest%%\?*}"
    rest="${rest##*@}"
    if [[ "$rest" == \[* ]]; then # [::1]:5432
        url_host="${rest%%]*}"
        url_host="${url_host#[}"
        rest="${rest#*]}"
        url_port="${rest#:}"
    elif [[ "$rest" == *:* ]]; then
        url_host="${rest%%:*}"
        url_port="${rest#*:}"
    else
        url_host="$rest"
        url_port=""
    fi
    [ -n "$url_host" ] || url_host=localhost
    [ -n "$url_port" ] || url_port="$default_port"
}

# True when host:port is this machine's default address for the service, i.e. ours to manage.
is_local_default() {
    local host="$1" port="$2" want_port="$3"
    [ "$port" = "$want_port" ] || return 1
    case "$host" in
        127.0.0.1 | localhost | ::1) return 0 ;;
        *) return 1 ;;
    esac
}

tcp_open() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1
}

pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -t 3 -d "$RENKEI_TEST_PG_URL" >/dev/null 2>&1
    else
        tcp_open "$pg_host" "$pg_port"
    fi
}

redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(timeout 3 redis-cli --no-auth-warning -u "$RENKEI_TEST_REDIS_URL" ping 2>/dev/null)" = "PONG" ]
    else
        timeout 3 bash -c "exec 3<>/dev/tcp/$redis_host/$redis_port; printf 'PING\r\n' >&3; read -r reply <&3; [[ \$reply == +PONG* ]]" \
            >/dev/null 2>&1
    fi
}

# wait_for NAME CHECK_FUNCTION: polls for up to $wait_secs seconds.
wait_for() {
    local name="$1" check="$2" deadline=$((SECONDS + wait_secs))
    info "waiting up to ${wait_secs}s for $name ..."
    while ! "$check"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 1
    done
    info "$name answers"
}

apt_updated=0
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "$* is not installed and this script is not running as root, so it cannot install it.
    Install it yourself (apt-get install $*), or point RENKEI_TEST_PG_URL / RENKEI_TEST_REDIS_URL at running servers."
    command -v apt-get >/dev/null 2>&1 || die "$* is not installed and apt-get is not available to install it."
    info "installing $* with apt-get"
    if [ "$apt_updated" -eq 0 ]; then
        apt-get update
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" </dev/null
}

# Version directories are plain numbers, so ls is fine here.
# shellcheck disable=SC2012
pg_cluster_version() {
    ls /etc/postgresql 2>/dev/null | sort -V | tail -1
}

# For a cluster this script installed: let TCP loopback connections in without a password.
pg_trust_loopback() {
    local version="$1" hba="/etc/postgresql/$1/main/pg_hba.conf"
    [ -f "$hba" ] || die "expected $hba for the freshly installed PostgreSQL cluster"
    info "setting trust auth for 127.0.0.1/32 and ::1/128 in $hba (cluster installed by this script)"
    sed -i -E \
        -e 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+).*#\1trust#' \
        -e 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+).*#\1trust#' \
        "$hba"
    grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba" ||
        echo "host all all 127.0.0.1/32 trust" >>"$hba"
    grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+trust' "$hba" ||
        echo "host all all ::1/128 trust" >>"$hba"
    # A cluster that is not running yet reads pg_hba.conf when it starts.
    if pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
}

ensure_postgres() {
    parse_url "$RENKEI_TEST_PG_URL" 5432
    pg_host="$url_host"
    pg_port="$url_port"
    local where="$pg_host:$pg_port"

    if pg_answers; then
        info "PostgreSQL answers on $where"
    elif ! is_local_default "$pg_host" "$pg_port" 5432; then
        info "PostgreSQL at $where (RENKEI_TEST_PG_URL) is not managed by this script; only checking it"
        wait_for "PostgreSQL on $where" pg_answers ||
            die "PostgreSQL does not answer at $where (from RENKEI_TEST_PG_URL=$RENKEI_TEST_PG_URL).
    Start it, or unset RENKEI_TEST_PG_URL to use a local server on 127.0.0.1:5432."
    else
        info "PostgreSQL does not answer on $where"
        local installed_here=0 version
        if ! command -v pg_ctlcluster >/dev/null 2>&1; then
            apt_install postgresql
            installed_here=1
        fi
        version="$(pg_cluster_version)"
        if [ -z "$version" ]; then
            # Server packages present but no cluster: create one, which makes it ours.
            # shellcheck disable=SC2012
            version="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)"
            [ -n "$version" ] || die "PostgreSQL tools are installed but no server version is under /usr/lib/postgresql"
            info "creating PostgreSQL cluster $version/main"
            pg_createcluster "$version" main
            installed_here=1
        fi
        if [ "$installed_here" -eq 1 ]; then
            pg_trust_loopback "$version"
        fi
        if ! pg_answers; then
            info "starting PostgreSQL cluster $version/main"
            pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
                info "pg_ctlcluster start failed; see /var/log/postgresql/postgresql-$version-main.log"
        fi
        wait_for "PostgreSQL on $where" pg_answers ||
            die "PostgreSQL cluster $version/main did not answer on $where within ${wait_secs}s.
    See /var/log/postgresql/postgresql-$version-main.log and pg_lsclusters."
    fi

    # Answering is not enough: the tests connect as the URL's user without a password prompt.
    if command -v psql >/dev/null 2>&1; then
        local out
        if ! out="$(PGCONNECT_TIMEOUT=5 psql "$RENKEI_TEST_PG_URL" -w -X -tAc 'select 1' 2>&1 </dev/null)"; then
            die "PostgreSQL answers on $where but connecting with RENKEI_TEST_PG_URL=$RENKEI_TEST_PG_URL fails:
    $out
    The tests need a user that may create databases, reachable without a password prompt
    (trust auth for 127.0.0.1 in pg_hba.conf, or a password in the URL)."
        fi
    fi
}

start_local_redis() {
    mkdir -p /var/lib/redis /var/log/redis
    info "starting redis-server on 127.0.0.1:6379 (log: /var/log/redis/ci.log)"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log ||
        info "redis-server failed to start; see /var/log/redis/ci.log"
}

ensure_redis() {
    parse_url "$RENKEI_TEST_REDIS_URL" 6379
    redis_host="$url_host"
    redis_port="$url_port"
    local where="$redis_host:$redis_port"

    if redis_answers; then
        info "Redis answers on $where"
    elif ! is_local_default "$redis_host" "$redis_port" 6379; then
        info "Redis at $where (RENKEI_TEST_REDIS_URL) is not managed by this script; only checking it"
        wait_for "Redis on $where" redis_answers ||
            die "Redis does not answer PING at $where (from RENKEI_TEST_REDIS_URL=$RENKEI_TEST_REDIS_URL).
    Start it, or unset RENKEI_TEST_REDIS_URL to use a local server on 127.0.0.1:6379."
    else
        info "Redis does not answer on $where"
        if ! command -v redis-server >/dev/null 2>&1; then
            apt_install redis-server
            # The package may have started its own service; give it a moment before adding ours.
            sleep 1
        fi
        if ! redis_answers; then
            start_local_redis
        fi
        wait_for "Redis on $where" redis_answers ||
            die "Redis did not answer PING on $where within ${wait_secs}s. See /var/log/redis/ci.log."
    fi
}

begin_phase "services: PostgreSQL and Redis"
ensure_postgres
ensure_redis
info "RENKEI_TEST_PG_URL=$RENKEI_TEST_PG_URL"
info "RENKEI_TEST_REDIS_URL=$RENKEI_TEST_REDIS_URL"

if [ "$services_only" -eq 1 ]; then
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Step b: toolchain components
# ---------------------------------------------------------------------------------------------
begin_phase "toolchain: rustfmt and clippy"
command -v cargo >/dev/null 2>&1 || die "cargo is not installed (install Rust with rustup: https://rustup.rs)"
missing=()
cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
if [ "${#missing[@]}" -gt 0 ]; then
    command -v rustup >/dev/null 2>&1 ||
        die "missing Rust components: ${missing[*]}, and rustup is not available to add them"
    info "adding Rust components: ${missing[*]}"
    rustup component add "${missing[@]}"
fi
cargo --version
cargo fmt --version
cargo clippy --version

# The PKI tests open every PKCS#12 bundle with the openssl binary and Python's cryptography,
# the two readers real devices' bundles are checked against.
begin_phase "tools: openssl and python3 cryptography"
if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl
fi
if ! python3 -c 'import cryptography' >/dev/null 2>&1; then
    python3 -m pip install --quiet cryptography </dev/null ||
        apt_install python3-cryptography
fi
openssl version
python3 -c 'import cryptography; print("python cryptography", cryptography.__version__)'

begin_phase "tools: python3 peers for notification channels"
# The SMTP server, Web Push endpoint and push gateway the channel tests talk to
# (tests/peers/, started by tests/src/peers.rs).
if ! python3 -c 'import aiosmtpd, http_ece' >/dev/null 2>&1; then
    python3 -m pip install --quiet -r tests/peers/requirements.txt </dev/null
fi
python3 -c 'import aiosmtpd, http_ece; print("aiosmtpd", aiosmtpd.__version__, "http_ece ok")'

# The federated login tests run a real OpenID provider: npm's oidc-provider under Node.js
# (tests/oidc, versions pinned by its package-lock.json).
begin_phase "tools: node and oidc-provider"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] ||
    die "oidc-provider 9 needs Node.js 20 or later; $(command -v node) is $(node --version)."
oidc_dir=tests/oidc
if [ ! -d "$oidc_dir/node_modules" ] || [ "$oidc_dir/package-lock.json" -nt "$oidc_dir/node_modules" ]; then
    info "installing $oidc_dir/node_modules from its package-lock.json"
    npm ci --prefix "$oidc_dir" --no-audit --no-fund </dev/null
    # npm ci may leave the directory's time alone: mark it as newer than the lock file.
    touch "$oidc_dir/node_modules"
fi
echo "node $(node --version)"
echo "oidc-provider $(node -p 'require("./tests/oidc/node_modules/oidc-provider/package.json").version')"

# ---------------------------------------------------------------------------------------------
# Step c: formatting and lints
# ---------------------------------------------------------------------------------------------
begin_phase "cargo fmt --check"
cargo fmt --all -- --check

begin_phase "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# ---------------------------------------------------------------------------------------------
# Step d: the suite, once per database
# ---------------------------------------------------------------------------------------------
begin_phase "cargo test (RENKEI_TEST_DB=sqlite)"
RENKEI_TEST_DB=sqlite cargo test --workspace --locked

begin_phase "cargo test (RENKEI_TEST_DB=postgres)"
RENKEI_TEST_DB=postgres cargo test --workspace --locked

# ---------------------------------------------------------------------------------------------
# Step e: API contract check, information only (never fails the run)
# ---------------------------------------------------------------------------------------------
contract_tool=../shared/tools/contract-check
if command -v python3 >/dev/null 2>&1 && [ -f "$contract_tool" ] && [ -f schema.graphql ]; then
    begin_phase "contract check (information only)"
    if ! python3 -c 'import graphql' >/dev/null 2>&1; then
        python3 -m pip install --quiet graphql-core </dev/null >/dev/null 2>&1 ||
            pip install --quiet graphql-core </dev/null >/dev/null 2>&1 ||
            info "could not install graphql-core; the contract check will be skipped"
    fi
    contract_out="$(python3 "$contract_tool" schema.graphql 2>&1 </dev/null)" || true
    info "contract check: $(printf '%s\n' "$contract_out" | tail -n 1)"
else
    info "contract check skipped (needs python3, $contract_tool and schema.graphql)"
fi

end_phase ok
echo
echo "run.sh: all checks passed"
