//! One booted VM: qemu-system-x86_64 under TCG on a qcow2 overlay of the cached image, with a
//! per-test seed disk, user networking restricted to forwarded loopback ports, the serial console
//! logged to a file, and the command channel.
//!
//! qemu is killed (SIGKILL) when the `Vm` is dropped, including on a panic, and when the test
//! process dies (PR_SET_PDEATHSIG), so no guest outlives its test. [`Vm::power_cut`] kills it the
//! same way on purpose; [`Vm::boot`] starts it again on the same disk.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::agent::{Agent, GuestOutcome};
use super::guest::{AGENT_PORT, HOST_IP};
use super::image::Image;
use crate::run::run_ok;

/// How long a boot may take until the command channel answers (TCG: about 100 s on 2 cores).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

/// A host service the guest reaches at `127.0.0.1:<guest_port>` (and `localhost`).
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    pub guest_port: u16,
    pub host_port: u16,
}

pub struct Vm {
    dir: tempfile::TempDir,
    /// `$TEND_VM_LOGS/<name>-<pid>` (default /tmp/tend-vm-logs): console and qemu logs.
    logs: PathBuf,
    image: Image,
    forwards: Vec<Forward>,
    qemu: Option<Child>,
    agent: Option<Agent>,
    boots: u32,
}

impl Vm {
    /// Creates the VM's disks: an overlay of `image`, and a seed disk holding `seed_root` (copied
    /// over `/` at first boot) and the forwarded ports. Does not boot.
    pub fn create(name: &str, image: &Image, seed_root: &Path, forwards: &[Forward]) -> Result<Vm> {
        let dir = tempfile::Builder::new().prefix("tend-vm-").tempdir()?;
        let logs = std::env::var_os("TEND_VM_LOGS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/tend-vm-logs"))
            .join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let mut cmd = Command::new("qemu-img");
        cmd.args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&image.rootfs)
            .arg(dir.path().join("root.qcow2"));
        run_ok(cmd, "qemu-img create (overlay)", Duration::from_secs(60))?;

        let seed = dir.path().join("seed");
        crate::copy_tree(seed_root, &seed.join("root"))?;
        let ports: Vec<String> = forwards.iter().map(|f| f.guest_port.to_string()).collect();
        fs::write(seed.join("forwards"), ports.join("\n") + "\n")?;
        let mut mkfs = Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F", "-L", "seed", "-d"])
            .arg(&seed)
            .arg(dir.path().join("seed.img"))
            .arg("32M");
        run_ok(mkfs, "mkfs.ext4 -d (seed)", Duration::from_secs(60))?;
        Ok(Vm {
            dir,
            logs,
            image: image.clone(),
            forwards: forwards.to_vec(),
            qemu: None,
            agent: None,
            boots: 0,
        })
    }

    /// The serial console of every boot, appended: the test artifact, kept after the test.
    pub fn console_log(&self) -> PathBuf {
        self.logs.join("console.log")
    }

    /// Starts qemu and waits until the command channel answers.
    pub fn boot(&mut self) -> Result<Duration> {
        if self.qemu.is_some() {
            bail!("the VM is already running");
        }
        self.boots += 1;
        let started = Instant::now();
        let socket = self.dir.path().join(format!("agent-{}.sock", self.boots));
        let stderr = fs::File::create(self.logs.join(format!("qemu-{}.log", self.boots)))?;
        let mut cmd = self.qemu_command(&socket);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.qemu = Some(cmd.spawn().context("starting qemu-system-x86_64")?);
        let mut agent = Agent::connect(&socket, Duration::from_secs(30))
            .with_context(|| self.failure_context())?;
        let deadline = started + BOOT_TIMEOUT;
        loop {
            self.check_running()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the VM did not answer within {BOOT_TIMEOUT:?} of booting\n{}",
                    self.failure_context()
                );
            }
            // The agent starts late in boot; until then the request waits in the port.
            match agent.run("echo ready", left.min(Duration::from_secs(30))) {
                Ok(out) if out.stdout.trim() == "ready" => break,
                Ok(out) => bail!("unexpected agent answer: {out}"),
                Err(_) => continue,
            }
        }
        self.agent = Some(agent);
        Ok(started.elapsed())
    }

    fn qemu_command(&self, socket: &Path) -> Command {
        let d = self.dir.path();
        let mut netdev = "user,id=net0,restrict=on".to_string();
        for f in &self.forwards {
            // One socat per guest connection: a chardev target would carry only one.
            netdev.push_str(&format!(
                ",guestfwd=tcp:{HOST_IP}:{}-cmd:socat - TCP:127.0.0.1:{}",
                f.guest_port, f.host_port
            ));
        }
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35", "-accel", "tcg,thread=multi", "-smp", "2"])
            .args([
                "-m", "1024", "-display", "none", "-vga", "none", "-monitor", "none",
            ])
            .arg("-kernel")
            .arg(&self.image.kernel)
            .arg("-initrd")
            .arg(&self.image.initrd)
            .args([
                "-append",
                "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 panic=-1 \
                 systemd.journald.forward_to_console=1",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=qcow2",
                d.join("root.qcow2").display()
            ))
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                d.join("seed.img").display()
            ))
            .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"])
            .arg("-chardev")
            .arg(format!(
                "file,id=console,append=on,path={}",
                self.console_log().display()
            ))
            .args(["-serial", "chardev:console"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=agent,server=on,wait=off,path={}",
                socket.display()
            ))
            .args(["-device", "virtio-serial-pci"])
            .arg("-device")
            .arg(format!("virtserialport,chardev=agent,name={AGENT_PORT}"));
        cmd
    }

    /// Runs `script` in the guest (sh), whatever its exit code.
    pub fn sh(&mut self, script: &str, timeout: Duration) -> Result<GuestOutcome> {
        self.check_running()?;
        let context = self.failure_context();
        let agent = self.agent.as_mut().context("the VM is not booted")?;
        agent.run(script, timeout).map_err(|e| e.context(context))
    }

    /// Runs `script` in the guest and fails unless it exits 0.
    pub fn sh_ok(&mut self, script: &str, timeout: Duration) -> Result<GuestOutcome> {
        let out = self.sh(script, timeout)?;
        if !out.success() {
            bail!("{out}\n{}", self.failure_context());
        }
        Ok(out)
    }

    /// A guest file's content.
    pub fn read(&mut self, path: &str) -> Result<String> {
        Ok(self
            .sh_ok(&format!("cat '{path}'"), Duration::from_secs(60))?
            .stdout)
    }

    /// Kills qemu with SIGKILL: the guest loses power, nothing is flushed.
    pub fn power_cut(&mut self) {
        self.kill();
    }

    /// Where to look when something went wrong.
    pub fn failure_context(&self) -> String {
        format!(
            "VM console log: {} (qemu's stderr: {})",
            self.console_log().display(),
            self.logs.join("qemu-*.log").display()
        )
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.qemu.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.qemu = None;
                bail!("qemu exited ({status})\n{}", self.failure_context());
            }
            return Ok(());
        }
        bail!("the VM is not running")
    }

    fn kill(&mut self) {
        self.agent = None;
        if let Some(mut child) = self.qemu.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
