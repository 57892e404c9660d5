//! What the running process keeps resident: once serving, it hands back
//! the pages of code and read-only data that only start-up touched.
//!
//! Start-up (CLI, config parsing and checks, TLS, metrics registry, admin)
//! runs once and pages in megabytes of the binary — more than the request
//! path ever needs, since the kernel maps code around each fault in 64 KiB
//! windows. Those pages are clean copies of the file: dropping them from the
//! process (`MADV_DONTNEED`) costs nothing but a minor fault the next time
//! one is used (a config reload, an admin call), when it comes straight from
//! the page cache again. Writable mappings, and read-only ones holding
//! written pages (relocations), are never touched: their contents are not
//! the file's.

/// Releases the clean file-backed pages of every read-only mapping; returns
/// how many KiB were resident in them before.
#[cfg(target_os = "linux")]
pub fn release_startup_pages() -> std::io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for mapping in clean_file_mappings(&smaps) {
        // SAFETY: the range is a whole mapping of this process, read-only
        // and backed by an unmodified file, so dropping its pages only
        // makes the next access fault them back in from the same file.
        let result = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        released += mapping.rss_kib;
    }
    Ok(released)
}

#[cfg(not(target_os = "linux"))]
pub fn release_startup_pages() -> std::io::Result<u64> {
    Ok(0)
}

#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    rss_kib: u64,
}

/// The mappings of `/proc/self/smaps` text that are safe to drop: a file
/// path, no write permission, no private (anonymous) page, something
/// resident.
fn clean_file_mappings(smaps: &str) -> Vec<Mapping> {
    let mut found = Vec::new();
    let mut current: Option<(Mapping, bool)> = None;
    let mut finish = |entry: Option<(Mapping, bool)>| {
        if let Some((mapping, true)) = entry {
            if mapping.rss_kib > 0 {
                found.push(mapping);
            }
        }
    };
    for line in smaps.lines() {
        if let Some((key, value)) = line.split_once(':').filter(|(k, _)| is_field(k)) {
            let Some((mapping, eligible)) = current.as_mut() else {
                continue;
            };
            let kib = value.trim().trim_end_matches("kB").trim().parse::<u64>();
            match (key, kib) {
                ("Rss", Ok(kib)) => mapping.rss_kib = kib,
                ("Anonymous", Ok(kib)) if kib > 0 => *eligible = false,
                ("Anonymous", Err(_)) => *eligible = false,
                _ => {}
            }
            continue;
        }
        finish(current.take());
        current = mapping_header(line);
    }
    finish(current.take());
    found
}

/// A field line (`Rss:   12 kB`, `VmFlags: rd ex`) has a key of letters,
/// digits and underscores; a header line starts with an address range.
fn is_field(key: &str) -> bool {
    !key.contains('-') && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `start-end perms offset dev inode path`; the bool says whether
/// the mapping may be dropped so far (read-only, backed by a file).
fn mapping_header(line: &str) -> Option<(Mapping, bool)> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let path = fields.nth(3).unwrap_or("");
    let mapping = Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        rss_kib: 0,
    };
    let eligible = perms.starts_with('r') && !perms.contains('w') && path.starts_with('/');
    Some((mapping, eligible))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:00 1234   /usr/bin/switchyard
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
55d0a0100000-55d0a0500000 r-xp 00100000 fd:00 1234   /usr/bin/switchyard
Size:               4096 kB
Rss:                3000 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
55d0a0500000-55d0a0520000 r--p 00500000 fd:00 1234   /usr/bin/switchyard
Size:                128 kB
Rss:                 128 kB
Anonymous:           128 kB
VmFlags: rd mr mw me ac sd
55d0a0520000-55d0a0530000 rw-p 00520000 fd:00 1234   /usr/bin/switchyard
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
VmFlags: rd wr mr mw me ac sd
55d0a1000000-55d0a2000000 rw-p 00000000 00:00 0      [heap]
Rss:                2048 kB
Anonymous:          2048 kB
7f0000000000-7f0000010000 r--p 00000000 fd:00 99     /usr/lib/libc.so.6
Rss:                   0 kB
Anonymous:             0 kB
7fff00000000-7fff00002000 r--p 00000000 00:00 0      [vvar]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_read_only_unwritten_resident_file_mappings_are_dropped() {
        let found = clean_file_mappings(SMAPS);
        assert_eq!(
            found,
            vec![
                Mapping {
                    start: 0x55d0a0000000,
                    end: 0x55d0a0100000,
                    rss_kib: 512
                },
                Mapping {
                    start: 0x55d0a0100000,
                    end: 0x55d0a0500000,
                    rss_kib: 3000
                },
            ]
        );
    }

    #[test]
    fn unreadable_anonymous_figure_keeps_the_mapping() {
        let smaps = "1000-2000 r-xp 00000000 fd:00 1 /bin/x\nRss: 4 kB\nAnonymous: lots\n";
        assert!(clean_file_mappings(smaps).is_empty());
    }

    #[cfg(target_os = "linux")]
    fn resident_file_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let line = status
            .lines()
            .find(|l| l.starts_with("RssFile:"))
            .expect("RssFile");
        line.split_whitespace()
            .nth(1)
            .and_then(|kib| kib.parse().ok())
            .expect("kib")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_release_shrinks_the_resident_file_pages_and_code_keeps_running() {
        let before = resident_file_kib();
        let released = release_startup_pages().expect("madvise");
        let after = resident_file_kib();
        assert!(released > 0, "a running test binary has resident code");
        assert!(after < before, "RssFile {before} KiB -> {after} KiB");
        // Code and read-only data fault back in on use.
        assert_eq!(format!("{:?}", vec![1, 2, 3]), "[1, 2, 3]");
    }
}
