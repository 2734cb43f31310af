//! Which mounts hold a local file system: one whose open and attribute reads of a file whose
//! path the kernel has cached never wait for a network server or a user-space daemon. Only
//! there may a lookup be made on an executor thread (`Repos::cached_lookup`).
//!
//! A mount is known by the id `statx` reports (`STATX_MNT_ID`) together with the device of
//! the file (`stx_dev`), as `/proc/self/mountinfo` lists them; the table is read again only
//! when a lookup lands on a pair not seen yet (procfs is generated from memory: it waits for
//! no disk or server). The kernel hands a freed mount id to the next mount, so the id alone
//! could name an NFS mount by the entry of an unmounted disk; the device number tells them
//! apart. A pair the table does not list (a btrfs subvolume below its mount point, whose
//! files have a device number of their own) is not local.

use crate::lock::Lock as _;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// File systems that keep everything a cached lookup needs in memory. Not here, so handled
/// on blocking threads as before: network file systems (NFS, CIFS, 9p, Ceph), FUSE
/// (`fuse`, `fuseblk`: an open goes to a daemon), stacking ones (overlay, ecryptfs), which
/// may sit on any of those, and ZFS (its dentries are always revalidated, so a cached
/// lookup never succeeds there anyway).
const LOCAL: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "vfat", "msdos", "exfat", "ntfs3", "jfs",
    "nilfs2", "bcachefs", "tmpfs", "ramfs", "hfsplus", "udf", "reiserfs",
];

/// A mount as statx and mountinfo both name it: its id and the device `major:minor`.
pub(crate) type MountKey = (u64, u32, u32);

/// Mounts seen so far, and whether each is local.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    known: Mutex<HashMap<MountKey, bool>>,
    /// `/proc/self/mountinfo` could not be read (no /proc): nothing is local, and it is not
    /// tried again on every lookup.
    unreadable: AtomicBool,
}

impl Mounts {
    /// Whether the mount `key` holds a local file system (false if it cannot be told).
    pub(crate) fn is_local(&self, key: MountKey) -> bool {
        if let Some(&local) = self.known.locked().get(&key) {
            return local;
        }
        if self.unreadable.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
            self.unreadable.store(true, Ordering::Relaxed);
            return false;
        };
        let mut known = self.known.locked();
        known.extend(parse(&table));
        // Not listed: remembered as not local, so the table is not read for it again.
        *known.entry(key).or_insert(false)
    }
}

/// `((mount id, major, minor), local)` for each line of a mountinfo table: `36 35 98:0
/// /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw` (proc(5)). Paths there have their
/// spaces escaped, so " - " only ever separates the optional fields from the file system
/// type.
fn parse(table: &str) -> impl Iterator<Item = (MountKey, bool)> + '_ {
    table.lines().filter_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut fields = mount.split(' ');
        let id = fields.next()?.parse().ok()?;
        let (major, minor) = fields.nth(1)?.split_once(':')?;
        let key = (id, major.parse().ok()?, minor.parse().ok()?);
        let fs_type = fs.split(' ').next()?;
        Some((key, LOCAL.contains(&fs_type)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_tell_local_file_systems_from_the_others() {
        let table = "\
22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
25 22 0:21 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw
31 22 0:30 / /mnt/nas\\040share rw,relatime shared:9 - nfs4 nas:/export rw,vers=4.2
32 22 8:17 / /media/usb rw - fuseblk /dev/sdb1 rw,user_id=0
33 22 0:31 /@data /srv rw master:3 tag:x - btrfs /dev/sda2 rw
34 22 0:32 / /var/lib/docker/x rw - overlay overlay rw,lowerdir=/a
not a mountinfo line
35 22 0:33 / /s - - cifs //h/s rw
";
        let got: HashMap<MountKey, bool> = parse(table).collect();
        let want: HashMap<MountKey, bool> = [
            ((22, 179, 2), true),
            ((25, 0, 21), true),
            ((31, 0, 30), false),
            ((32, 8, 17), false),
            ((33, 0, 31), true),
            ((34, 0, 32), false),
            ((35, 0, 33), false),
        ]
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn a_mount_id_given_to_another_file_system_is_looked_up_again() {
        // An ext4 disk was mount 40 (8:1); after it was unmounted, an NFS mount got id 40.
        let mounts = Mounts::default();
        mounts.known.locked().insert((40, 8, 1), true);
        assert!(mounts.is_local((40, 8, 1)));
        // (40, 0, 99) is not in this machine's table either way: not local.
        assert!(!mounts.is_local((40, 0, 99)));
        assert!(!mounts.is_local((u64::MAX, 0, 0)));
    }

    #[test]
    fn the_mount_of_a_temp_dir_is_found() {
        // Whatever the test machine's file system, the id statx gives is in the table.
        let st = rustix::fs::statx(
            rustix::fs::CWD,
            std::env::temp_dir(),
            rustix::fs::AtFlags::empty(),
            rustix::fs::StatxFlags::MNT_ID,
        )
        .unwrap();
        let key = (st.stx_mnt_id, st.stx_dev_major, st.stx_dev_minor);
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let listed: HashMap<MountKey, bool> = parse(&table).collect();
        let mounts = Mounts::default();
        assert_eq!(mounts.is_local(key), listed.get(&key) == Some(&true));
        assert!(mounts.known.locked().contains_key(&key));
    }
}
