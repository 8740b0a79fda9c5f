//! The file a page-cache folio belongs to: `struct address_space` → `struct inode` → its
//! dentries, whose names up to the filesystem's root are the file's path.

use memtrace_common::{
    FilePath, InodeId,
    aggregate::{FILE_PATH_DEPTH, FILE_PATH_NAME, TMPFS_MAGIC},
};

use super::{KernelStr, kernel_ptr, offsets, read_at};

kernel_ptr!(
    /// `struct address_space *`: a file's page cache.
    AddressSpace,
    "struct address_space *"
);

kernel_ptr!(
    /// `struct inode *`
    Inode,
    "struct inode *"
);

kernel_ptr!(
    /// `struct dentry *`
    Dentry,
    "struct dentry *"
);

impl AddressSpace {
    /// `mapping->host`.
    #[inline(always)]
    pub fn host(self) -> Option<Inode> {
        let inode: u64 = self.read(offsets().mapping_host).ok()?;
        // SAFETY: `address_space.host` is the owning `struct inode *`.
        unsafe { Inode::from_addr(inode) }.non_null()
    }
}

impl Inode {
    /// The inode number and device of the file (`i_ino`, `i_sb->s_dev`), and whether it is
    /// deleted (`i_nlink == 0`) or in tmpfs (`i_sb->s_magic`).
    #[inline(always)]
    pub fn id(self) -> Option<InodeId> {
        let o = offsets();
        let ino: u64 = self.read(o.inode_ino).ok()?;
        let sb: *const u8 = self.read(o.inode_sb).ok()?;
        let dev: u32 = read_at(sb, o.sb_dev).ok()?;
        let mut flags = 0;
        if self.unlinked() {
            flags |= InodeId::UNLINKED;
        }
        if read_at::<u64>(sb, o.sb_magic).is_ok_and(|m| m == TMPFS_MAGIC) {
            flags |= InodeId::SHMEM;
        }
        Some(InodeId { ino, dev, flags })
    }

    /// Whether the file is deleted (`i_nlink == 0`): its pages live while it is open or mapped.
    #[inline(always)]
    pub fn unlinked(self) -> bool {
        self.read::<u32>(offsets().inode_nlink)
            .is_ok_and(|n| n == 0)
    }

    /// Fills `path` with the names from the inode's first dentry up to its filesystem's root
    /// (`d_parent` until a dentry is its own parent), at most [`FILE_PATH_DEPTH`] of them.
    #[inline(always)]
    pub fn read_path(self, path: &mut FilePath) {
        let o = offsets();
        path.depth = 0;
        path.flags = 0;
        // `i_dentry.first` points at the first alias's `d_u.d_alias`.
        let first: u64 = self.read(o.inode_dentry).unwrap_or(0);
        if first == 0 {
            path.flags |= FilePath::NO_DENTRY;
            return;
        }
        // SAFETY: an `i_dentry` entry is a `struct dentry`'s `d_u.d_alias`.
        let mut dentry =
            unsafe { Dentry::from_addr(first.wrapping_sub(u64::from(o.dentry_alias))) };
        if dentry
            .read::<u64>(o.dentry_hash_pprev)
            .is_ok_and(|p| p == 0)
        {
            path.flags |= FilePath::UNHASHED;
        }
        let mut level = 0;
        while level < FILE_PATH_DEPTH {
            let Ok(parent) = dentry.read::<u64>(o.dentry_parent) else {
                path.flags |= FilePath::TRUNCATED;
                return;
            };
            if parent == dentry.addr() || parent == 0 {
                return;
            }
            let Ok(name) = dentry.read::<*const u8>(o.dentry_name) else {
                path.flags |= FilePath::TRUNCATED;
                return;
            };
            let Some(slot) = path
                .names
                .get_mut(level * FILE_PATH_NAME..(level + 1) * FILE_PATH_NAME)
            else {
                return;
            };
            match KernelStr(name).read_into(slot) {
                Ok(len) if len + 1 >= FILE_PATH_NAME => path.flags |= FilePath::NAME_CUT,
                Ok(_) => {}
                Err(_) => {
                    path.flags |= FilePath::TRUNCATED;
                    return;
                }
            }
            level += 1;
            #[expect(clippy::cast_possible_truncation, reason = "at most FILE_PATH_DEPTH")]
            {
                path.depth = level as u32;
            }
            // SAFETY: `d_parent` is a `struct dentry *`.
            dentry = unsafe { Dentry::from_addr(parent) };
        }
        // Names left above the deepest one read.
        if dentry
            .read::<u64>(o.dentry_parent)
            .is_ok_and(|parent| parent != dentry.addr())
        {
            path.flags |= FilePath::TRUNCATED;
        }
    }
}
