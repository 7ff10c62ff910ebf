//! The few raw `bpf(2)` calls the benchmark makes itself, and CPU/time helpers.
//!
//! aya runs netguard's and the floor's programs; the same `BPF_PROG_TEST_RUN` call is made here
//! on a bare file descriptor so that a program aya did not load (xdp-filter's, opened by id) and
//! the traffic generator (two instructions, no ELF object) are measured exactly the same way.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// `union bpf_attr` is 144 bytes on 6.x kernels; bytes past what a command uses must be zero.
#[repr(C, align(8))]
struct Attr([u8; 160]);

impl Attr {
    fn new() -> Self {
        Attr([0; 160])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised, 8-aligned buffer larger than the kernel's
    // `union bpf_attr`, and every pointer stored in it outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Loads an XDP program from raw instructions (no ELF object, no BTF).
fn load_raw_xdp(name: &str, insns: &[u64]) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64);
    let name = &name.as_bytes()[..name.len().min(15)];
    attr.0[48..48 + name.len()].copy_from_slice(name);
    bpf(BPF_PROG_LOAD, &mut attr)
        .map(owned)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_LOAD ({name:?}): {e}")))
}

/// One eBPF instruction: opcode, registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst as u64) << 8)
        | ((src as u64) << 12)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

/// `return XDP_TX`: the traffic generator run with live frames.
pub fn load_xdp_tx() -> io::Result<OwnedFd> {
    load_raw_xdp(
        "ngb_gen_tx",
        &[insn(0xb7, 0, 0, 0, XDP_TX as i32), insn(0x95, 0, 0, 0, 0)],
    )
}

/// The smallest real port filter: bounds-check 54 bytes, read the TCP destination port (IPv4
/// without options assumed), drop it when it is 22, else pass. 11 instructions; unlike
/// `floor_drop` it touches the packet, so it pays for bringing the frame into the cache.
pub fn load_read_drop() -> io::Result<OwnedFd> {
    load_raw_xdp(
        "ngb_read_drop",
        &[
            insn(0x61, 2, 1, 0, 0),                        // r2 = ctx->data
            insn(0x61, 3, 1, 4, 0),                        // r3 = ctx->data_end
            insn(0xbf, 4, 2, 0, 0),                        // r4 = r2
            insn(0x07, 4, 0, 0, 54),                       // r4 += 54
            insn(0x2d, 4, 3, 4, 0),                        // if r4 > r3 goto pass
            insn(0x69, 5, 2, 36, 0),                       // r5 = *(u16 *)(r2 + 36): TCP dport
            insn(0x55, 5, 0, 2, i32::from(22u16.to_be())), // if r5 != htons(22) goto pass
            insn(0xb7, 0, 0, 0, XDP_DROP as i32),          // r0 = XDP_DROP
            insn(0x95, 0, 0, 0, 0),                        // exit
            insn(0xb7, 0, 0, 0, XDP_PASS as i32),          // pass: r0 = XDP_PASS
            insn(0x95, 0, 0, 0, 0),                        // exit
        ],
    )
}

/// Attaches `prog` to `ifindex` (of the calling thread's network namespace) in driver mode
/// through a bpf link; closing the returned link detaches it.
pub fn xdp_link_native(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, XDP_FLAGS_DRV_MODE);
    bpf(BPF_LINK_CREATE, &mut attr).map(owned).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("BPF_LINK_CREATE (XDP, ifindex {ifindex}): {e}"),
        )
    })
}

/// Opens a loaded program by its id (as `bpftool prog show` lists it).
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, id);
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
        .map(owned)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_GET_FD_BY_ID {id}: {e}")))
}

/// Size of a loaded program: (id, JIT-compiled bytes, translated eBPF bytes).
pub fn prog_info(prog: BorrowedFd<'_>) -> io::Result<(u32, u32, u32)> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_prog_info up to xlated_prog_len; the pointer fields after it stay zero.
    let mut info = [0u8; 24];
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let word = |off: usize| u32::from_ne_bytes(info[off..off + 4].try_into().expect("4 bytes"));
    Ok((word(4), word(16), word(20)))
}

/// One `BPF_PROG_TEST_RUN` with `repeat` runs of the program on `frame`.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub retval: u32,
    /// The kernel's own figure: whole nanoseconds per run (it truncates the average).
    pub kernel_ns: u32,
    /// This thread's CPU time for the whole call divided by `repeat`: sub-nanosecond
    /// resolution, and time spent running other tasks is not counted.
    pub cpu_ns: f64,
    pub wall_ns: f64,
}

pub fn test_run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<Run> {
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(8, frame.len() as u32)
        .u64(16, frame.as_ptr() as u64)
        .u32(32, repeat);
    let (c0, w0) = (thread_cpu_ns(), monotonic_ns());
    bpf(BPF_PROG_TEST_RUN, &mut attr)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_TEST_RUN: {e}")))?;
    let (c1, w1) = (thread_cpu_ns(), monotonic_ns());
    Ok(Run {
        retval: attr.get_u32(4),
        kernel_ns: attr.get_u32(36),
        cpu_ns: (c1 - c0) as f64 / f64::from(repeat),
        wall_ns: (w1 - w0) as f64 / f64::from(repeat),
    })
}

/// `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`: `frames` real frames built from
/// `frame`, arriving on `ingress_ifindex` (an interface of the calling thread's network
/// namespace); what the program returns happens for real (`XDP_TX` transmits them).
pub fn live_frames(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ingress_ifindex: u32,
    frames: u32,
    batch: u32,
) -> io::Result<()> {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
    let mut ctx = [0u32; 6];
    ctx[1] = frame.len() as u32;
    ctx[3] = ingress_ifindex;
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(8, frame.len() as u32)
        .u64(16, frame.as_ptr() as u64)
        .u32(32, frames)
        .u32(40, std::mem::size_of_val(&ctx) as u32)
        .u64(48, ctx.as_ptr() as u64)
        .u32(64, BPF_F_TEST_XDP_LIVE_FRAMES)
        .u32(72, batch);
    bpf(BPF_PROG_TEST_RUN, &mut attr)
        .map(|_| ())
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_TEST_RUN (live frames): {e}")))
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Pins a thread (`tid` 0: the calling one) to one CPU.
pub fn pin_to_cpu(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays within it for cpu < 1024.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(
            e.kind(),
            format!("sched_setaffinity({tid}, cpu {cpu}): {e}"),
        ))
    }
}

/// Sets the nice value of a thread (`tid` 0: the calling one).
pub fn set_nice(tid: libc::pid_t, nice: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a thread id.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs a handler that does nothing for `sig`, so the signal only interrupts a blocking
/// call (without `SA_RESTART`) instead of killing the process.
pub fn ignore_signal(sig: libc::c_int) -> io::Result<()> {
    extern "C" fn noop(_: libc::c_int) {}
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = noop as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into the network namespace `ns` (an open `/run/netns/NAME`).
pub fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    // SAFETY: setns on an open namespace descriptor; only this thread changes namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
