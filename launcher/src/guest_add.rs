//! `--guest-add FILE[:DEST]` and `--guest-add DIR[:DEST]`: files for the guest without rebuilding
//! its image. The launcher writes them into a second cpio archive (`newc`, uncompressed) and
//! appends it to a copy of the image's initramfs; the kernel unpacks concatenated archives one
//! after the other, later entries replacing earlier ones (Documentation/driver-api/early-userspace
//! /buffer-format.rst: an archive starts at a 4-byte boundary, zero bytes between archives are
//! skipped).
//!
//! Where a file lands (DEST omitted): an executable file in `/usr/local/bin/<name>`, any other
//! file in `/root/<name>`; a directory is an overlay on `/` (`DIR/etc/x` becomes `/etc/x`).
//! DEST must be absolute. Parent directories are created (mode 0755). Owner root, mtime 0.
//! Regular files, directories and symbolic links are copied; anything else is refused.
//!
//! Pure apart from reading the sources: [`GuestAdd::parse`] checks a spec, [`Archive`] builds the
//! bytes, [`append_to_initrd`] writes `initrd ++ padding ++ archive`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Where files without a DEST go: executables here, other files in [`DEFAULT_DATA_DIR`].
pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";
/// Where non-executable files without a DEST go.
pub const DEFAULT_DATA_DIR: &str = "/root";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Why a `--guest-add` cannot be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    /// The source does not exist.
    Missing { spec: String, path: PathBuf },
    /// DEST is not an absolute path (or has `..`).
    BadDest { spec: String, dest: String },
    /// Something other than a file, directory or symlink (a device, a socket, a FIFO).
    Unsupported { path: PathBuf },
    /// Reading a source or writing the image failed.
    Io { path: PathBuf, message: String },
}

impl std::fmt::Display for AddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddError::Missing { spec, path } => write!(f, "--guest-add {spec}: {} does not exist", path.display()),
            AddError::BadDest { spec, dest } => write!(
                f,
                "--guest-add {spec}: the destination {dest:?} must be an absolute path in the guest without '..' \
                 (FILE[:/DEST] or DIR[:/DEST])"
            ),
            AddError::Unsupported { path } => {
                write!(f, "--guest-add: {} is not a regular file, directory or symbolic link", path.display())
            }
            AddError::Io { path, message } => write!(f, "--guest-add: {}: {message}", path.display()),
        }
    }
}

impl std::error::Error for AddError {}

/// One `--guest-add` argument, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestAdd {
    /// On this machine.
    pub source: PathBuf,
    /// In the guest (absolute); for a directory, where its contents go.
    pub dest: PathBuf,
    pub is_dir: bool,
}

fn io_err(path: &Path, e: std::io::Error) -> AddError {
    AddError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// A path in the guest: absolute, without `..`.
fn guest_path(spec: &str, dest: &str) -> Result<PathBuf, AddError> {
    let p = Path::new(dest);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(AddError::BadDest { spec: spec.into(), dest: dest.into() });
    }
    Ok(p.to_path_buf())
}

impl GuestAdd {
    /// `SRC[:DEST]`. The last `:` followed by `/` separates DEST, so a source path may hold `:`.
    pub fn parse(spec: &str) -> Result<GuestAdd, AddError> {
        let (src, dest) = match spec.rfind(':') {
            Some(i) if i > 0 => (&spec[..i], Some(&spec[i + 1..])),
            _ => (spec, None),
        };
        // "a:b" where "a:b" exists and "b" is relative: a file name with a colon, no DEST.
        let (src, dest) = match dest {
            Some(d) if !d.starts_with('/') && Path::new(spec).exists() => (spec, None),
            other => (src, other),
        };
        let source = PathBuf::from(src);
        let meta = fs::metadata(&source).map_err(|_| AddError::Missing { spec: spec.into(), path: source.clone() })?;
        let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dest = match dest {
            // "FILE:/dir/": into that directory, under the file's own name.
            Some(d) if d.ends_with('/') && d.len() > 1 && !meta.is_dir() => guest_path(spec, d)?.join(&name),
            Some(d) => guest_path(spec, d)?,
            None if meta.is_dir() => PathBuf::from("/"),
            None if meta.permissions().mode() & 0o111 != 0 => Path::new(DEFAULT_BIN_DIR).join(&name),
            None => Path::new(DEFAULT_DATA_DIR).join(&name),
        };
        Ok(GuestAdd { source, dest, is_dir: meta.is_dir() })
    }
}

/// A `newc` cpio archive under construction (entries in the order added, parents first).
#[derive(Debug, Default)]
pub struct Archive {
    bytes: Vec<u8>,
    dirs: BTreeSet<PathBuf>,
    ino: u32,
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// One entry: the 110-byte header, the name (NUL-terminated, padded to 4), the data (padded).
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let fields = [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        pad4(&mut self.bytes);
        self.bytes.extend_from_slice(data);
        pad4(&mut self.bytes);
    }

    /// `dir` and its missing parents (mode 0755), each once.
    fn parents(&mut self, dir: &Path) {
        let mut todo = Vec::new();
        for a in dir.ancestors() {
            if a == Path::new("/") || a.as_os_str().is_empty() || self.dirs.contains(a) {
                break;
            }
            todo.push(a.to_path_buf());
        }
        for d in todo.into_iter().rev() {
            self.entry(&d.to_string_lossy(), S_IFDIR | 0o755, &[]);
            self.dirs.insert(d);
        }
    }

    /// A regular file at `dest` with permission bits `perm`.
    pub fn file(&mut self, dest: &Path, perm: u32, data: &[u8]) {
        if let Some(p) = dest.parent() {
            self.parents(p);
        }
        self.entry(&dest.to_string_lossy(), S_IFREG | (perm & 0o7777), data);
    }

    /// A symbolic link at `dest` pointing to `target`.
    pub fn symlink(&mut self, dest: &Path, target: &str) {
        if let Some(p) = dest.parent() {
            self.parents(p);
        }
        self.entry(&dest.to_string_lossy(), S_IFLNK | 0o777, target.as_bytes());
    }

    /// A directory at `dest` (and its parents).
    pub fn dir(&mut self, dest: &Path) {
        self.parents(dest);
    }

    /// Adds one source (a file, a symlink, or a directory tree in name order).
    pub fn add(&mut self, add: &GuestAdd) -> Result<(), AddError> {
        self.add_path(&add.source, &add.dest, true)
    }

    fn add_path(&mut self, src: &Path, dest: &Path, follow: bool) -> Result<(), AddError> {
        let meta = if follow { fs::metadata(src) } else { fs::symlink_metadata(src) }.map_err(|e| io_err(src, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(|e| io_err(src, e))?;
            self.symlink(dest, &target.to_string_lossy());
        } else if ft.is_file() {
            let data = fs::read(src).map_err(|e| io_err(src, e))?;
            self.file(dest, meta.mode(), &data);
        } else if ft.is_dir() {
            self.dir(dest);
            let mut names: Vec<_> = fs::read_dir(src)
                .map_err(|e| io_err(src, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| io_err(src, e))?;
            names.sort();
            for n in names {
                self.add_path(&src.join(&n), &dest.join(&n), false)?;
            }
        } else {
            return Err(AddError::Unsupported { path: src.to_path_buf() });
        }
        Ok(())
    }

    /// The archive with its `TRAILER!!!` entry.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

/// Writes `out` = the image's `initrd`, zero bytes to a 4-byte boundary, then one archive with
/// every `adds` entry. Returns the archive's size.
pub fn append_to_initrd(initrd: &Path, adds: &[GuestAdd], out: &Path) -> Result<usize, AddError> {
    let mut archive = Archive::new();
    for a in adds {
        archive.add(a)?;
    }
    let archive = archive.finish();
    let mut base = fs::read(initrd).map_err(|e| io_err(initrd, e))?;
    pad4(&mut base);
    let mut f = fs::File::create(out).map_err(|e| io_err(out, e))?;
    f.write_all(&base).and_then(|()| f.write_all(&archive)).map_err(|e| io_err(out, e))?;
    Ok(archive.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a newc archive back: (name, mode, data) per entry, checking magic and alignment.
    fn entries(b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let hex = |s: &[u8]| u32::from_str_radix(std::str::from_utf8(s).unwrap(), 16).unwrap();
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            assert_eq!(i % 4, 0, "entry at {i} not 4-byte aligned");
            assert_eq!(&b[i..i + 6], b"070701", "magic at {i}");
            let f = |k: usize| hex(&b[i + 6 + 8 * k..i + 14 + 8 * k]);
            let (mode, size, namesize) = (f(1), f(6) as usize, f(11) as usize);
            let name = std::str::from_utf8(&b[i + 110..i + 110 + namesize - 1]).unwrap().to_string();
            assert_eq!(b[i + 110 + namesize - 1], 0, "name NUL");
            let data_at = (i + 110 + namesize).next_multiple_of(4);
            let data = b[data_at..data_at + size].to_vec();
            i = (data_at + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(i, b.len(), "nothing after the trailer");
                return out;
            }
            out.push((name, mode, data));
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cosim-guest-add-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn newc_entries_with_parents_once_and_odd_sizes() {
        let mut a = Archive::new();
        a.file(Path::new("/usr/local/bin/prog"), 0o755, b"12345");
        a.file(Path::new("/usr/local/bin/x"), 0o644, b"");
        a.symlink(Path::new("/usr/local/lib/l"), "../bin/prog");
        let e = entries(&a.finish());
        let names: Vec<&str> = e.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/prog",
                "usr/local/bin/x",
                "usr/local/lib",
                "usr/local/lib/l"
            ]
        );
        assert_eq!(e[0].1, 0o040755);
        assert_eq!((e[3].1, e[3].2.as_slice()), (0o100755, &b"12345"[..]));
        assert_eq!((e[4].1, e[4].2.len()), (0o100644, 0));
        assert_eq!((e[6].1, e[6].2.as_slice()), (0o120777, &b"../bin/prog"[..]));
    }

    #[test]
    fn default_destinations_and_explicit_ones() {
        let d = tmp("parse");
        let exe = d.join("prog");
        fs::write(&exe, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let data = d.join("data.bin");
        fs::write(&data, b"x").unwrap();
        let s = |p: &Path| p.to_string_lossy().into_owned();
        assert_eq!(GuestAdd::parse(&s(&exe)).unwrap().dest, Path::new("/usr/local/bin/prog"));
        assert_eq!(GuestAdd::parse(&s(&data)).unwrap().dest, Path::new("/root/data.bin"));
        let g = GuestAdd::parse(&s(&d)).unwrap();
        assert!(g.is_dir);
        assert_eq!(g.dest, Path::new("/"));
        let g = GuestAdd::parse(&format!("{}:/opt/p", s(&exe))).unwrap();
        assert_eq!((g.source, g.dest), (exe.clone(), PathBuf::from("/opt/p")));
        // A source whose name holds a colon.
        let colon = d.join("a:b");
        fs::write(&colon, b"").unwrap();
        assert_eq!(GuestAdd::parse(&s(&colon)).unwrap().dest, Path::new("/root/a:b"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_destination_ending_in_a_slash_is_a_directory_for_a_file() {
        let dir = std::env::temp_dir().join(format!("cosim-guest-add-slash-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("prog");
        fs::write(&file, b"x").unwrap();
        let a = GuestAdd::parse(&format!("{}:/opt/t/", file.display())).unwrap();
        assert_eq!(a.dest, Path::new("/opt/t/prog"));
        let b = GuestAdd::parse(&format!("{}:/opt/t", file.display())).unwrap();
        assert_eq!(b.dest, Path::new("/opt/t"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_sources_and_relative_destinations_are_refused() {
        let d = tmp("errors");
        let f = d.join("f");
        fs::write(&f, b"").unwrap();
        let missing = d.join("nope");
        let e = GuestAdd::parse(&missing.to_string_lossy()).unwrap_err();
        assert!(matches!(&e, AddError::Missing { path, .. } if path == &missing), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        for dest in ["rel/x", "/a/../b"] {
            let e = GuestAdd::parse(&format!("{}:{dest}", f.display())).unwrap_err();
            assert!(matches!(&e, AddError::BadDest { dest: got, .. } if got == dest), "{e}");
            assert!(e.to_string().contains("absolute"), "{e}");
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_overlay_keeps_its_tree_and_the_image_comes_first() {
        let d = tmp("overlay");
        let src = d.join("tree");
        fs::create_dir_all(src.join("etc/b")).unwrap();
        fs::write(src.join("etc/a.conf"), b"abc").unwrap();
        fs::write(src.join("etc/b/c"), b"hello").unwrap();
        std::os::unix::fs::symlink("a.conf", src.join("etc/link")).unwrap();
        let initrd = d.join("base.cpio.gz");
        fs::write(&initrd, b"\x1f\x8b-seven!").unwrap(); // 9 bytes: padded to 12
        let out = d.join("out");
        let add = GuestAdd::parse(&format!("{}:/srv", src.display())).unwrap();
        let n = append_to_initrd(&initrd, &[add], &out).unwrap();
        let b = fs::read(&out).unwrap();
        assert_eq!(&b[..9], b"\x1f\x8b-seven!");
        assert_eq!(&b[9..12], &[0, 0, 0]);
        assert_eq!(b.len(), 12 + n);
        let e = entries(&b[12..]);
        let got: Vec<(&str, u32)> = e.iter().map(|(n, m, _)| (n.as_str(), m & 0o170000)).collect();
        assert_eq!(
            got,
            [
                ("srv", S_IFDIR),
                ("srv/etc", S_IFDIR),
                ("srv/etc/a.conf", S_IFREG),
                ("srv/etc/b", S_IFDIR),
                ("srv/etc/b/c", S_IFREG),
                ("srv/etc/link", S_IFLNK)
            ]
        );
        assert_eq!(e[4].2, b"hello");
        assert_eq!(e[5].2, b"a.conf");
        fs::remove_dir_all(&d).unwrap();
    }
}
