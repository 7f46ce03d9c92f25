//! Facts: what the device is, read from the managed root (and the kernel for network interfaces).
//!
//! Facts are cheap by design (a few small files, one syscall): they are read on every run on a Pi.

use std::path::Path;

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Interface {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    /// `ID` from os-release, e.g. "debian".
    pub os_id: String,
    /// `VERSION_CODENAME`, e.g. "bookworm".
    pub os_codename: String,
    pub os_version_id: String,
    /// dpkg's architecture, e.g. "arm64", "armhf".
    pub architecture: String,
    pub hostname: String,
    pub device_id: String,
    /// e.g. "raspberrypi4"; also the name of a group that applies to every device of the type.
    pub device_type: Option<String>,
    pub interfaces: Vec<Interface>,
    pub tend_version: String,
}

pub struct Inputs<'a> {
    pub root: &'a Path,
    pub device_id: &'a str,
    pub device_type: Option<String>,
}

pub fn gather(inputs: Inputs) -> Facts {
    let root = inputs.root;
    let os = read(root, "etc/os-release")
        .or_else(|| read(root, "usr/lib/os-release"))
        .unwrap_or_default();
    let field = |key: &str| os_release_field(&os, key).unwrap_or_default();
    Facts {
        os_id: field("ID"),
        os_codename: field("VERSION_CODENAME"),
        os_version_id: field("VERSION_ID"),
        architecture: architecture(root),
        hostname: read(root, "etc/hostname")
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(kernel_hostname),
        device_id: inputs.device_id.to_string(),
        device_type: inputs.device_type.or_else(|| mender_device_type(root)),
        interfaces: interfaces(),
        tend_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// Mender's device type file, `device_type=raspberrypi4`, where Mender images keep it.
fn mender_device_type(root: &Path) -> Option<String> {
    ["var/lib/mender/device_type", "data/mender/device_type"]
        .iter()
        .find_map(|p| {
            let text = read(root, p)?;
            text.lines()
                .find_map(|l| l.strip_prefix("device_type=").map(|v| v.trim().to_string()))
        })
}

fn architecture(root: &Path) -> String {
    let host = tend_roles::Host::new(root);
    tend_roles::platform::dpkg::native_architecture(&host).unwrap_or_default()
}

fn kernel_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Interfaces with their addresses, from getifaddrs(3); loopback is left out.
fn interfaces() -> Vec<Interface> {
    let mut out: Vec<Interface> = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; we only read it in between.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        if name == "lo" {
            continue;
        }
        let idx = match out.iter().position(|i| i.name == name) {
            Some(i) => i,
            None => {
                out.push(Interface {
                    name,
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family tells its real type.
        unsafe {
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    out[idx].ipv4.push(
                        std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)).to_string(),
                    );
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    out[idx]
                        .ipv6
                        .push(std::net::Ipv6Addr::from(sa.sin6_addr.s6_addr).to_string());
                }
                libc::AF_PACKET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_ll);
                    let len = (sa.sll_halen as usize).min(8);
                    if len > 0 {
                        let mac: Vec<String> = sa.sll_addr[..len]
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        out[idx].mac = Some(mac.join(":"));
                    }
                }
                _ => {}
            }
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_os_release_and_mender_type_from_the_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::create_dir_all(d.path().join("var/lib/mender")).unwrap();
        std::fs::write(
            d.path().join("etc/os-release"),
            "ID=debian\nVERSION_CODENAME=bookworm\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/hostname"), "pi-kiosk-1\n").unwrap();
        std::fs::write(
            d.path().join("var/lib/mender/device_type"),
            "device_type=raspberrypi3\n",
        )
        .unwrap();
        let f = gather(Inputs {
            root: d.path(),
            device_id: "dev1",
            device_type: None,
        });
        assert_eq!(
            (
                f.os_id.as_str(),
                f.os_codename.as_str(),
                f.os_version_id.as_str()
            ),
            ("debian", "bookworm", "12")
        );
        assert_eq!(f.hostname, "pi-kiosk-1");
        assert_eq!(f.device_type.as_deref(), Some("raspberrypi3"));
    }
}
