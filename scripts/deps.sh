# Sourced by scripts/run and scripts/test: install the Debian packages sipfleet needs, only
# when some are missing (dpkg-query first, so a ready machine pays nothing).
sipfleet_packages=(
        # build
        gcc meson ninja-build pkg-config
        # libraries (DESIGN.md): SIP stack, loops, Redis, TLS, JSON, SRTP, HTTP/2, SQLite, systemd
        libsofia-sip-ua-dev libevent-dev libhiredis-dev libssl-dev libjansson-dev libsrtp2-dev
        libcurl4-openssl-dev libsqlite3-dev libsystemd-dev
        # presence: PIDF, RLMI and resource lists parsed with libxml2
        libxml2-dev
        # tests: Check, real servers and peers, unit verification
        check libsubunit-dev redis-server redis-tools sip-tester systemd liblinphone-dev
        # liblinphone chat needs the belr grammars (identity, cpim) of linphone-common
        linphone-common
        # pushd tests: HTTP/2-over-TLS servers playing APNs and FCM (test/servers/)
        python3-h2
        # Redis failover tests: real sentinels
        redis-sentinel
        # SIPp over TLS: Debian's SIPp has no TLS, stunnel4 wraps its TCP
        stunnel4
        # auth: MariaDB/MySQL account store (client library; a real server and python3 for tests)
        libmariadb-dev mariadb-server python3
        # media relay interop test (Kamailio's rtpengine module) and benchmark (rtpengine)
        kamailio rtpengine-daemon
        # three-host failover test: network namespaces and veth links (ip netns)
        iproute2
)

sipfleet_install_deps() {
        local missing=()
        local p
        for p in "${sipfleet_packages[@]}"; do
                if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
                        missing+=("$p")
                fi
        done
        if ((${#missing[@]} == 0)); then
                return 0
        fi
        echo ">> installing: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
                echo "!! missing Debian packages and not root: apt-get install ${missing[*]}" >&2
                return 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
        # Tests run their own kamailio and rtpengine on free ports: not the packaged services.
        if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
                systemctl disable --now kamailio.service rtpengine-daemon.service 2>/dev/null || true
        fi
}
