//! Making the path what the resource wants: inspecting what is there without following it, the
//! summary notes for owner and mode, and the atomic replace, mkdir, link and removal.

use std::io;
use std::path::Path;

use rustix::fs::FileType;

use super::*;
use crate::fsutil::{self, Meta};

impl FileResource {
    /// What is at the name in its opened parent, never following it.
    pub(super) fn inspect(&self, parent: &ParentDir) -> Result<Found, ResourceError> {
        let err = |e: io::Error| ResourceError::io(Path::new(&self.path), e);
        let Some(entry) = parent.lstat().map_err(err)? else {
            return Ok(Found::Missing);
        };
        let stat = Stat {
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
        };
        Ok(match entry.kind {
            FileType::RegularFile => {
                let content = match self.want {
                    Want::File(_) => parent.read().map_err(err)?,
                    _ => Vec::new(),
                };
                Found::File { stat, content }
            }
            FileType::Directory => {
                let entries = match self.want {
                    Want::Directory => 0,
                    _ => parent.count_entries().map_err(err)?,
                };
                Found::Dir { stat, entries }
            }
            FileType::Symlink => Found::Link {
                stat,
                target: parent.read_link().map_err(err)?,
            },
            FileType::Fifo => Found::Other { kind: "fifo" },
            FileType::Socket => Found::Other { kind: "socket" },
            FileType::BlockDevice => Found::Other {
                kind: "block device",
            },
            _ => Found::Other {
                kind: "character device",
            },
        })
    }

    /// Mode, owner and group of an existing object of the wanted kind; unset means keep.
    pub(super) fn stat_changes(
        &self,
        stat: &Stat,
        actual: &Actual,
        host: &Host,
        parts: &mut Vec<String>,
    ) {
        if let Some(mode) = self.mode.filter(|m| *m != stat.mode) {
            parts.push(format!("mode {:04o} -> {mode:04o}", stat.mode));
        }
        if let (true, Some(owner)) = (differs(&actual.uid, stat.uid), &self.owner) {
            parts.push(format!("owner {} -> {owner}", user_label(host, stat.uid)));
        }
        if let (true, Some(group)) = (differs(&actual.gid, stat.gid), &self.group) {
            parts.push(format!("group {} -> {group}", group_label(host, stat.gid)));
        }
    }

    /// What a new object gets beyond the defaults (0644/0755, root:root).
    pub(super) fn new_object_notes(&self, parts: &mut Vec<String>) {
        if let Some(mode) = self.mode {
            parts.push(format!("mode {mode:04o}"));
        }
        if let Some(owner) = &self.owner {
            parts.push(format!("owner {owner}"));
        }
        if let Some(group) = &self.group {
            parts.push(format!("group {group}"));
        }
    }

    /// Changes the object at the path through its opened parent: a swapped parent directory
    /// cannot redirect any step.
    pub(super) fn converge(&self, actual: Actual, host: &Host) -> Result<(), ResourceError> {
        let io_err = |e: io::Error| ResourceError::io(Path::new(&self.path), e);
        let uid = resolved(&actual.uid)?;
        let gid = resolved(&actual.gid)?;
        let absent = matches!(self.want, Want::Absent);
        let parent = match host.open_parent(
            &self.path,
            if absent {
                Missing::Fail
            } else {
                Missing::Create
            },
        ) {
            Ok(parent) => parent,
            Err(WalkError::MissingParent { .. } | WalkError::ParentNotADirectory { .. })
                if absent =>
            {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        let p = &parent;
        let write =
            |bytes: &[u8], meta: Meta| fsutil::atomic_write_at(p.fd(), p.name(), bytes, meta);
        let link = |target: &str, uid: u32, gid: u32| {
            fsutil::symlink_at(p.fd(), p.name(), target, uid, gid)
        };
        // Ownership of a new object (or one of another kind that it replaces) defaults to root.
        let (new_uid, new_gid) = (uid.unwrap_or(0), gid.unwrap_or(0));
        match (&self.want, actual.found) {
            (Want::Absent, Found::Missing) => Ok(()),
            (Want::Absent, Found::Dir { .. }) => p.remove_tree(),
            (Want::Absent, _) => p.unlink(),

            (Want::File(new), found) => {
                let mode = self.mode.unwrap_or(DEFAULT_FILE_MODE);
                let meta = Meta {
                    mode: Some(mode),
                    uid: Some(new_uid),
                    gid: Some(new_gid),
                };
                match found {
                    Found::File { stat, content } => {
                        let (mode, uid, gid) = (
                            self.mode.unwrap_or(stat.mode),
                            uid.unwrap_or(stat.uid),
                            gid.unwrap_or(stat.gid),
                        );
                        if content[..] == new[..] {
                            p.set_stat(false, mode, uid, gid)
                        } else {
                            write(
                                new,
                                Meta {
                                    mode: Some(mode),
                                    uid: Some(uid),
                                    gid: Some(gid),
                                },
                            )
                        }
                    }
                    Found::Dir { .. } => p.remove_tree().and_then(|()| write(new, meta)),
                    // rename() replaces a link or node itself: nothing is written through a link.
                    Found::Missing | Found::Link { .. } | Found::Other { .. } => write(new, meta),
                }
            }

            (Want::Directory, found) => {
                let mode = self.mode.unwrap_or(DEFAULT_DIR_MODE);
                match found {
                    Found::Dir { stat, .. } => p.set_stat(
                        true,
                        self.mode.unwrap_or(stat.mode),
                        uid.unwrap_or(stat.uid),
                        gid.unwrap_or(stat.gid),
                    ),
                    Found::Missing => p.make_dir(mode, new_uid, new_gid),
                    _ => p.unlink().and_then(|()| p.make_dir(mode, new_uid, new_gid)),
                }
            }

            (Want::Link(target), found) => match found {
                Found::Link { stat, target: have } if have.as_os_str() == target.as_str() => {
                    p.chown_link(uid.unwrap_or(stat.uid), gid.unwrap_or(stat.gid))
                }
                Found::Link { stat, .. } => {
                    link(target, uid.unwrap_or(stat.uid), gid.unwrap_or(stat.gid))
                }
                Found::Dir { .. } => p
                    .remove_tree()
                    .and_then(|()| link(target, new_uid, new_gid)),
                Found::Missing | Found::File { .. } | Found::Other { .. } => {
                    link(target, new_uid, new_gid)
                }
            },
        }
        .map_err(io_err)
    }
}
