//! What the test bed adds to the VM image, beyond Debian's packages and the tend .deb: the
//! network, the command channel, the per-test seed, loopback proxies to the host's services and a
//! short tend timer.
//!
//! Everything a test varies (keys, the CA, tend's configuration, which host services exist) comes
//! from the seed disk at first boot, so one cached image serves every test. The guest reaches the
//! host only through qemu's `guestfwd` at [`HOST_IP`]; each forwarded port is proxied in the
//! guest from `127.0.0.1:<port>` (systemd-socket-proxyd), so URLs in the guest name `localhost`,
//! which the test bed's certificates are issued for.

/// The address qemu's user network forwards to the host's loopback services (`guestfwd`).
pub const HOST_IP: &str = "10.0.2.100";

/// The virtio-serial port name of the command channel.
pub const AGENT_PORT: &str = "org.tend.agent";

/// One file of the image: path in the guest, mode, content.
pub struct GuestFile {
    pub path: &'static str,
    pub mode: u32,
    pub content: &'static str,
}

/// Units enabled in the image (besides what the packages enable).
pub const ENABLE: &[&str] = &[
    "systemd-networkd.service",
    "systemd-networkd-wait-online.service",
    "tend-vm-agent.service",
    "tend-vm-seed.service",
];

/// The command channel: reads `<id> <base64 script>` lines from the virtio-serial port, runs each
/// with sh, and answers `R <id> <exit code> <base64 stdout> <base64 stderr>`. Plain sh and
/// coreutils, so nothing beyond Debian's base system is needed in the guest.
const AGENT: &str = r#"#!/bin/sh
# tend test bed: the host's command channel into this VM (tests/src/vm). Not part of tend.
port=/dev/virtio-ports/org.tend.agent
while [ ! -e "$port" ]; do sleep 1; done
exec 3<>"$port"
work=/run/tend-vm-agent
mkdir -p "$work"
while IFS=' ' read -r id script <&3; do
  printf '%s' "$script" | base64 -d >"$work/script"
  sh "$work/script" </dev/null >"$work/out" 2>"$work/err"
  rc=$?
  { printf 'R %s %s ' "$id" "$rc"; base64 -w0 "$work/out"; printf ' '; base64 -w0 "$work/err"; printf '\n'; } >&3
done
"#;

const AGENT_UNIT: &str = "[Unit]\nDescription=tend test bed command channel\n\
DefaultDependencies=no\nAfter=systemd-udevd.service\n\n[Service]\n\
ExecStart=/usr/local/sbin/tend-vm-agent\nRestart=always\nRestartSec=1\n\n\
[Install]\nWantedBy=multi-user.target\n";

/// First boot: copies the seed disk's `root/` over `/` and starts a proxy for every port it
/// lists, before the Mender client and tend's first run. Later boots keep what was seeded.
const SEED: &str = r#"#!/bin/sh
# tend test bed: per-test provisioning from the seed disk (tests/src/vm). Not part of tend.
set -eu
[ -e /var/lib/tend-vm/seeded ] && exit 0
mkdir -p /run/tend-vm-seed
mount -o ro /dev/vdb /run/tend-vm-seed
cp -a /run/tend-vm-seed/root/. /
for port in $(cat /run/tend-vm-seed/forwards); do
  systemctl enable --now "tend-vm-proxy@$port.socket"
done
umount /run/tend-vm-seed
mkdir -p /var/lib/tend-vm
touch /var/lib/tend-vm/seeded
sync
"#;

const SEED_UNIT: &str = "[Unit]\nDescription=tend test bed seed\nRequires=dev-vdb.device\n\
After=dev-vdb.device local-fs.target\n\
Before=tend.timer tend.service mender-client.service\n\n[Service]\nType=oneshot\n\
RemainAfterExit=yes\nExecStart=/usr/local/sbin/tend-vm-seed\n\n\
[Install]\nWantedBy=multi-user.target\n";

const PROXY_SOCKET: &str = "[Unit]\nDescription=tend test bed: host port %i on localhost\n\n\
[Socket]\nListenStream=127.0.0.1:%i\n\n[Install]\nWantedBy=sockets.target\n";

const PROXY_SERVICE: &str = "[Unit]\nDescription=tend test bed: proxy to the host's port %i\n\n\
[Service]\nExecStart=/lib/systemd/systemd-socket-proxyd 10.0.2.100:%i\n";

/// DHCP from qemu's user network (10.0.2.15); no DNS is needed, only forwarded addresses.
const NETWORK: &str = "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n";

/// tend's timer every few seconds after the previous run, instead of every 30 minutes with a
/// randomized delay: the drop-in a test (or an impatient lab) uses. One empty assignment resets
/// all of the package's triggers (monotonic and calendar alike), so it comes first. The first run
/// is relative to the timer's start rather than to boot, which under TCG is slow and uneven.
const TIMER_DROPIN: &str = "[Timer]\nOnCalendar=\nOnActiveSec=10s\nOnUnitInactiveSec=15s\n\
RandomizedDelaySec=0\nFixedRandomDelay=false\nAccuracySec=1s\nPersistent=false\n";

pub const FILES: &[GuestFile] = &[
    GuestFile {
        path: "/etc/hostname",
        mode: 0o644,
        content: "tend-vm\n",
    },
    GuestFile {
        path: "/etc/hosts",
        mode: 0o644,
        content: "127.0.0.1 localhost\n127.0.1.1 tend-vm\n",
    },
    GuestFile {
        path: "/etc/resolv.conf",
        mode: 0o644,
        content: "# tend test VM: no DNS; host services are forwarded to localhost ports\n",
    },
    GuestFile {
        path: "/etc/fstab",
        mode: 0o644,
        content: "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
    },
    GuestFile {
        path: "/etc/systemd/network/20-eth0.network",
        mode: 0o644,
        content: NETWORK,
    },
    GuestFile {
        path: "/usr/local/sbin/tend-vm-agent",
        mode: 0o755,
        content: AGENT,
    },
    GuestFile {
        path: "/etc/systemd/system/tend-vm-agent.service",
        mode: 0o644,
        content: AGENT_UNIT,
    },
    GuestFile {
        path: "/usr/local/sbin/tend-vm-seed",
        mode: 0o755,
        content: SEED,
    },
    GuestFile {
        path: "/etc/systemd/system/tend-vm-seed.service",
        mode: 0o644,
        content: SEED_UNIT,
    },
    GuestFile {
        path: "/etc/systemd/system/tend-vm-proxy@.socket",
        mode: 0o644,
        content: PROXY_SOCKET,
    },
    GuestFile {
        path: "/etc/systemd/system/tend-vm-proxy@.service",
        mode: 0o644,
        content: PROXY_SERVICE,
    },
    GuestFile {
        path: "/etc/systemd/system/tend.timer.d/50-test.conf",
        mode: 0o644,
        content: TIMER_DROPIN,
    },
    // mender-client keeps its state on the data partition (/var/lib/mender links there).
    GuestFile {
        path: "/data/mender/.keep",
        mode: 0o644,
        content: "",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_forward_to_the_host_address() {
        assert!(PROXY_SERVICE.contains(&format!("{HOST_IP}:%i")));
        assert!(AGENT.contains(AGENT_PORT));
    }

    /// An empty `OnCalendar=` after `OnBootSec=20s` once left the timer with no trigger at all.
    #[test]
    fn regression_timer_reset_after_a_trigger_dropped_it() {
        let timers: Vec<&str> = TIMER_DROPIN
            .lines()
            .filter(|l| l.starts_with("On"))
            .collect();
        let first_set = timers.iter().position(|l| !l.ends_with('=')).unwrap();
        assert!(first_set > 0, "the package's triggers are not reset");
        assert!(timers[first_set..].iter().all(|l| !l.ends_with('=')));
    }

    #[test]
    fn every_enabled_unit_of_ours_is_in_the_image() {
        for unit in ENABLE.iter().filter(|u| u.starts_with("tend-vm")) {
            assert!(
                FILES.iter().any(|f| f.path.ends_with(unit)),
                "{unit} is enabled but not written"
            );
        }
    }
}
