//! STUB
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
pub enum FsError { #[error("io {path:?} {op}: {source}")] Io { path: PathBuf, op: &'static str, source: std::io::Error }, #[error("mismatch {path:?}: {detail}")] VerifyMismatch { path: PathBuf, detail: String } }
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)] pub struct TreeStats { pub files: u64, pub dirs: u64, pub symlinks: u64, pub others: u64, pub bytes: u64 }
pub fn tree_stats(_root: &Path) -> Result<TreeStats, FsError> { todo!() }
pub fn nearest_existing(_p: &Path) -> PathBuf { todo!() }
pub fn same_filesystem(_a: &Path, _b: &Path) -> Result<bool, FsError> { todo!() }
pub fn free_space(_p: &Path) -> Result<(u64, u64), FsError> { todo!() }
pub fn atomic_symlink(_t: &Path, _l: &Path, _o: Option<(u32, u32)>) -> Result<(), FsError> { todo!() }
pub struct CopyOptions { pub preserve_owner: bool }
#[derive(Debug, Default, Clone, Copy)] pub struct CopyStats { pub files: u64, pub bytes: u64, pub dirs: u64, pub symlinks: u64 }
pub fn copy_tree_verified(_s: &Path, _d: &Path, _o: &CopyOptions, _p: &(dyn Fn(u64, u64) + Sync)) -> Result<CopyStats, FsError> { todo!() }
pub fn copy_file_verified(_s: &Path, _d: &Path, _o: &CopyOptions) -> Result<(), FsError> { todo!() }
pub fn remove_tree(_p: &Path) -> Result<(), FsError> { todo!() }
