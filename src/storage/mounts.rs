//! Which mounts hold a local file system: one whose open and attribute reads of a file whose
//! path the kernel has cached never wait for a network server or a user-space daemon. Only
//! there may a lookup be made on an executor thread (`Repos::cached_lookup`).
//!
//! A mount is known by the id `statx` reports (`STATX_MNT_ID`); its file system type comes
//! from `/proc/self/mountinfo`, read again only when a lookup lands on a mount not seen yet
//! (procfs is generated from memory: it waits for no disk or server).

use crate::lock::Lock as _;
use std::collections::HashMap;
use std::sync::Mutex;

/// File systems that keep everything a cached lookup needs in memory. Not here, so handled
/// on blocking threads as before: network file systems (NFS, CIFS, 9p, Ceph), FUSE
/// (`fuse`, `fuseblk`: an open goes to a daemon) and stacking ones (overlay, ecryptfs), which
/// may sit on any of those.
const LOCAL: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "vfat", "msdos", "exfat", "ntfs3", "jfs",
    "nilfs2", "zfs", "bcachefs", "tmpfs", "ramfs", "hfsplus", "udf", "reiserfs",
];

/// Mount ids seen so far, and whether each is local.
#[derive(Debug, Default)]
pub(crate) struct Mounts(Mutex<HashMap<u64, bool>>);

impl Mounts {
    /// Whether mount `id` holds a local file system (false if it cannot be told).
    pub(crate) fn is_local(&self, id: u64) -> bool {
        if let Some(&local) = self.0.locked().get(&id) {
            return local;
        }
        let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return false;
        };
        let mut known = self.0.locked();
        known.extend(parse(&table));
        // A mount gone again before the table was read: not local, and asked again next time.
        known.get(&id).copied().unwrap_or(false)
    }
}

/// `(mount id, local)` for each line of a mountinfo table: `36 35 98:0 /mnt1 /mnt2 rw,noatime
/// master:1 - ext3 /dev/root rw` (proc(5)). Paths there have their spaces escaped, so " - "
/// only ever separates the optional fields from the file system type.
fn parse(table: &str) -> impl Iterator<Item = (u64, bool)> + '_ {
    table.lines().filter_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let id = mount.split(' ').next()?.parse().ok()?;
        let fs_type = fs.split(' ').next()?;
        Some((id, LOCAL.contains(&fs_type)))
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
        let got: HashMap<u64, bool> = parse(table).collect();
        let want: HashMap<u64, bool> = [
            (22, true),
            (25, true),
            (31, false),
            (32, false),
            (33, true),
            (34, false),
            (35, false),
        ]
        .into();
        assert_eq!(got, want);
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
        let mounts = Mounts::default();
        let local = mounts.is_local(st.stx_mnt_id);
        assert!(mounts.0.locked().contains_key(&st.stx_mnt_id));
        assert_eq!(mounts.is_local(st.stx_mnt_id), local);
    }
}
