//! sd_notify: `STATUS=` lines that `systemctl status tend` shows while a run is under way.
//!
//! Harmless when not under systemd (no NOTIFY_SOCKET): nothing is sent. The unit needs
//! `NotifyAccess=main`, because a oneshot service accepts no notifications by default.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

pub struct Notifier {
    socket: Option<(UnixDatagram, NotifyAddr)>,
}

enum NotifyAddr {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    pub fn from_env() -> Self {
        Self::new(std::env::var_os("NOTIFY_SOCKET").map(|s| s.to_string_lossy().into_owned()))
    }

    pub fn new(addr: Option<String>) -> Self {
        let socket = addr.filter(|a| !a.is_empty()).and_then(|a| {
            let addr = match a.strip_prefix('@') {
                Some(name) => NotifyAddr::Abstract(name.as_bytes().to_vec()),
                None => NotifyAddr::Path(PathBuf::from(a)),
            };
            UnixDatagram::unbound().ok().map(|s| (s, addr))
        });
        Self { socket }
    }

    fn send(&self, msg: &str) {
        let Some((sock, addr)) = &self.socket else {
            return;
        };
        let result = match addr {
            NotifyAddr::Path(p) => sock.send_to(msg.as_bytes(), p),
            NotifyAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
            }
        };
        if let Err(e) = result {
            tracing::debug!("sd_notify: {e}");
        }
    }

    /// One line of status text; newlines would end the field, so they become spaces.
    /// `systemctl status` shows it to every local user, so credentials are scrubbed.
    pub fn status(&self, text: &str) {
        let text = tend_roles::redact::scrub(text);
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reaches_the_notify_socket() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.display().to_string()));
        n.status("applying 12/40\nx");
        let mut buf = [0u8; 128];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=applying 12/40 x");
    }

    #[test]
    fn without_systemd_nothing_happens() {
        Notifier::new(None).status("fetching");
        Notifier::new(Some(String::new())).status("fetching");
    }
}
