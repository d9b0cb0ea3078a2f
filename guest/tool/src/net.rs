//! `accel-tool net`: raw Ethernet ping-pong through a guest NIC (AF_PACKET), for the dual-VM run
//! where the other end of the wire is the RTL's Ethernet port, which answers every frame with
//! destination and source MAC swapped (docs/register-map.md, "UART and Ethernet").
//! Frames use the local experimental EtherType 0x88b5 and carry "COSIMNET" + a sequence number.
//! One of the tool's two modules with `unsafe` (socket system calls; the other is `ioctl`).

use std::io;
use std::time::{Duration, Instant};

pub const ETHERTYPE: u16 = 0x88b5;
const MAGIC: &[u8; 8] = b"COSIMNET";
/// Destination MAC of the frames we send (locally administered; the RTL echoes any address).
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0xac, 0xc1, 0x00];

pub struct NetStats {
    pub iface: String,
    pub mac: [u8; 6],
    pub sent: u32,
    pub received: u32,
    pub rtts_us: Vec<f64>,
    pub tx_packets: u64,
    pub rx_packets: u64,
}

pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s.trim().split(':').filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
    v.try_into().ok()
}

/// First network interface other than loopback, by name.
pub fn default_iface() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.into_iter().next()
}

fn read_sys(iface: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{file}")).ok()
}

fn stat(iface: &str, name: &str) -> u64 {
    read_sys(iface, &format!("statistics/{name}")).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Builds one frame: dst, src, EtherType, magic, sequence (LE), zero padding to `size`.
pub fn build_frame(dst: &[u8; 6], src: &[u8; 6], seq: u32, size: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(size.max(60));
    f.extend_from_slice(dst);
    f.extend_from_slice(src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&seq.to_le_bytes());
    f.resize(size.max(60).max(f.len()), 0);
    f
}

/// The sequence number if `f` is the RTL's answer to one of our frames (MACs swapped).
pub fn parse_reply(f: &[u8], our_mac: &[u8; 6]) -> Option<u32> {
    if f.len() < 26 || &f[0..6] != our_mac || f[6..12] != PEER_MAC || f[12..14] != ETHERTYPE.to_be_bytes() {
        return None;
    }
    if &f[14..22] != MAGIC {
        return None;
    }
    Some(u32::from_le_bytes(f[22..26].try_into().ok()?))
}

struct RawSocket(libc::c_int);

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this struct owns, once.
        unsafe {
            libc::close(self.0);
        }
    }
}

fn sockaddr(ifindex: i32, dst: &[u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETHERTYPE.to_be();
    sa.sll_ifindex = ifindex;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(dst);
    sa
}

/// Sends `count` frames one at a time, each waiting up to `timeout` for its answer.
pub fn ping(iface: &str, count: u32, size: usize, timeout: Duration) -> io::Result<NetStats> {
    let mac = read_sys(iface, "address")
        .and_then(|s| parse_mac(&s))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no MAC for interface {iface}")))?;
    // Wait for the link (carrier) up to 10 s.
    let t0 = Instant::now();
    while read_sys(iface, "carrier").map(|s| s.trim() == "1") != Some(true) {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, format!("{iface}: no carrier (is the link up?)")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cname = std::ffi::CString::new(iface).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: cname is a valid NUL-terminated string for the duration of the call.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket(2) call; the descriptor is owned by RawSocket from here on.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETHERTYPE.to_be())) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let sock = RawSocket(fd);
    let sa = sockaddr(ifindex, &PEER_MAC);
    // SAFETY: sa is a valid sockaddr_ll and its size is passed.
    let r = unsafe {
        libc::bind(
            sock.0,
            &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = libc::timeval { tv_sec: 0, tv_usec: 20_000 };
    // SAFETY: SO_RCVTIMEO takes a timeval; pointer and size are of `tv`.
    unsafe {
        libc::setsockopt(
            sock.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    let (tx0, rx0) = (stat(iface, "tx_packets"), stat(iface, "rx_packets"));
    let mut st = NetStats {
        iface: iface.to_string(),
        mac,
        sent: 0,
        received: 0,
        rtts_us: Vec::new(),
        tx_packets: 0,
        rx_packets: 0,
    };
    let mut buf = vec![0u8; 10000];
    for seq in 0..count {
        let frame = build_frame(&PEER_MAC, &mac, seq, size);
        let t = Instant::now();
        // SAFETY: frame and sa are valid for the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                sock.0,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        st.sent += 1;
        while t.elapsed() < timeout {
            // SAFETY: recv into buf with its length.
            let n = unsafe { libc::recv(sock.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            if parse_reply(&buf[..n as usize], &mac) == Some(seq) {
                st.received += 1;
                st.rtts_us.push(t.elapsed().as_nanos() as f64 / 1e3);
                break;
            }
        }
    }
    st.tx_packets = stat(iface, "tx_packets").saturating_sub(tx0);
    st.rx_packets = stat(iface, "rx_packets").saturating_sub(rx0);
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_with_swapped_macs_is_recognised() {
        let me = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let f = build_frame(&PEER_MAC, &me, 7, 60);
        assert_eq!(f.len(), 60);
        assert_eq!(parse_reply(&f, &me), None, "our own frame is not a reply");
        let mut r = f.clone();
        r[0..6].copy_from_slice(&me);
        r[6..12].copy_from_slice(&PEER_MAC);
        assert_eq!(parse_reply(&r, &me), Some(7));
        assert_eq!(parse_mac("52:54:00:12:34:56\n"), Some(me));
    }
}
