// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// accel's XDP filter: the classifier in front of the AF_XDP datapath.
//
// One copy of this program runs on an interface, shared by every accelerated process there (the
// maps and the link are pinned under /sys/fs/bpf/accel/<netns>-<ifindex>-<ifname>/, see
// accel/src/xdp/loader.rs). For each received frame it decides one thing: is this a UDP
// datagram that an accelerated socket owns? If so, the frame is redirected to that socket's
// AF_XDP socket (XSK); in every other case — and in every case of doubt — XDP_PASS hands it to
// the kernel exactly as if no program were attached.
//
// What is passed to the kernel untouched: non-IPv4 (ARP, IPv6, VLAN-tagged frames), IPv4 with
// options (IHL != 5), fragments (MF set or a fragment offset: only the kernel can reassemble
// them), non-UDP, any length that does not add up, datagrams nobody asked for, and datagrams
// that arrived on a queue where the owning process has no XSK (an XSK only receives from the
// queue it is bound to: a frame is redirected to the owner's XSK of the queue it arrived on,
// found through `queues`).
//
// A process may have several XSKs on one queue (its "rings", one per ring allocation key: per
// socket, thread or core, as libvma's VMA_RING_ALLOCATION_LOGIC_RX), all sharing that queue's
// buffers (XDP_SHARED_UMEM). A filter's target names the ring; `xsks` holds one socket per
// (ring, queue), at index ring * MAX_QUEUES + queue.
//
// Lookups, most specific first:
//   1. conns   — the full 5-tuple, for connected sockets;
//   2. conns   — (proto, group, dst port, src ip, source port 0), for source-specific multicast
//      joins (IP_ADD_SOURCE_MEMBERSHIP: the group's datagrams from that source, whatever its
//      port); multicast only, so it never matches a connected socket's key (whose local address
//      is unicast);
//   3. filters — (proto, dst ip, dst port), for bound sockets and any-source multicast groups;
//   4. filters — (proto, 0.0.0.0, dst port), for sockets bound to INADDR_ANY; unicast only,
//      because a multicast datagram is only a socket's business if it joined the group, and a
//      group membership is an explicit filter entry.
// A group is steered either by source (2) or as a whole (3), never both: user space installs
// one kind per group (accel/src/xdp/port.rs), so a datagram from a source the member did not
// join matches nothing and goes to the kernel, which applies the membership's source filter.
//
// The program validates only what it needs to classify safely (bounds, version, IHL, fragment
// bits, lengths). The IPv4 header checksum and the UDP checksum are verified in user space
// (accel/src/xdp/frame.rs), which counts what it drops, by cause.
//
// Built by accel/build.rs with `clang -O2 -g -target bpf`; a copy of the object is checked in
// beside this file (filter.o, with the SHA-256 of this source in filter.c.sha256) for machines
// without clang. After editing this file, run accel/bpf/refresh.sh.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Key of `filters`: a local endpoint. 8 bytes, no holes: user space builds the same bytes
// (accel/src/xdp/loader.rs, FilterKey).
struct filter_key {
	__u8 proto;     // IPPROTO_UDP
	__u8 pad;       // always 0
	__be16 port;    // destination (local) port
	__be32 ip;      // destination (local) address; 0 = any (unicast only)
};

// Key of `conns`: a connected socket's full 5-tuple, seen from the receiver; or, with a
// multicast group as local_ip and remote_port 0, a source-specific membership. 16 bytes.
struct conn_key {
	__u8 proto;
	__u8 pad;
	__be16 local_port;
	__be32 local_ip;
	__be32 remote_ip;
	__be16 remote_port;
	__u16 pad2;     // always 0
};

// Value of both: whose the datagram is. `owner` is the pid that installed the entry: the frame
// goes to that process's XSK of ring `ring` on the queue it arrived on (`queues` says which
// process has that queue); user space also uses it to reclaim entries of processes that died.
struct target {
	__u32 ring;
	__u32 owner;
};

// Receive queues a program can serve, and rings per queue.
#define MAX_QUEUES 256
#define MAX_RINGS 32

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct filter_key);
	__type(value, struct target);
} filters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct conn_key);
	__type(value, struct target);
} conns SEC(".maps");

// The AF_XDP sockets: key = ring * MAX_QUEUES + queue.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES * MAX_RINGS);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Which process has an XSK on each receive queue: queue index -> its pid (0: none). Written by
// user space once its XSK is bound there (so only a process that holds the queue claims it),
// cleared when it leaves.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} queues SEC(".maps");

// The users of this program, one entry per open XdpVi: (pid << 32 | first queue) -> the process's
// start time (clock ticks since boot, as in /proc/<pid>/stat, so that a recycled pid is not
// mistaken for a live user). Not read here; it lives with the other maps so that the whole
// shared state is in one pinned directory.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} users SEC(".maps");

// Per-CPU counters, indexed by the STAT_* values below.
enum {
	STAT_REDIRECTED = 0,  // handed to an XSK
	STAT_NO_MATCH = 1,    // well-formed IPv4/UDP that no filter claims
	STAT_NOT_OURS = 2,    // not plain IPv4/UDP, a fragment, or malformed
	STAT_WRONG_QUEUE = 3, // claimed, but arrived on a queue where its owner has no XSK
	STAT_COUNT = 4,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline int count(__u32 which, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &which);
	if (n)
		*n += 1;  // per-CPU: no atomics needed
	return verdict;
}

static __always_inline int is_multicast_or_broadcast(__be32 ip)
{
	__u32 h = bpf_ntohl(ip);
	return (h & 0xf0000000) == 0xe0000000 || h == 0xffffffff;
}

SEC("xdp")
int accel_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return count(STAT_NOT_OURS, XDP_PASS);
	// VLAN tags (0x8100, 0x88a8) and everything that is not IPv4 stop here.
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return count(STAT_NOT_OURS, XDP_PASS);

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return count(STAT_NOT_OURS, XDP_PASS);
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return count(STAT_NOT_OURS, XDP_PASS);
	// MF set or a non-zero offset: a fragment, for the kernel to reassemble.
	if (ip->frag_off & bpf_htons(0x3fff))
		return count(STAT_NOT_OURS, XDP_PASS);

	__u16 tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < sizeof(struct iphdr) + sizeof(struct udphdr) ||
	    (void *)ip + tot_len > data_end)
		return count(STAT_NOT_OURS, XDP_PASS);

	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return count(STAT_NOT_OURS, XDP_PASS);
	__u16 udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(struct udphdr) || udp_len > tot_len - sizeof(struct iphdr))
		return count(STAT_NOT_OURS, XDP_PASS);

	struct conn_key ck = {
		.proto = IPPROTO_UDP,
		.local_port = udp->dest,
		.local_ip = ip->daddr,
		.remote_ip = ip->saddr,
		.remote_port = udp->source,
	};
	struct target *t = bpf_map_lookup_elem(&conns, &ck);
	int multicast = is_multicast_or_broadcast(ip->daddr);
	if (!t && multicast) {
		ck.remote_port = 0;
		t = bpf_map_lookup_elem(&conns, &ck);
	}
	if (!t) {
		struct filter_key fk = {
			.proto = IPPROTO_UDP,
			.port = udp->dest,
			.ip = ip->daddr,
		};
		t = bpf_map_lookup_elem(&filters, &fk);
		if (!t && !multicast) {
			fk.ip = 0;
			t = bpf_map_lookup_elem(&filters, &fk);
		}
	}
	if (!t)
		return count(STAT_NO_MATCH, XDP_PASS);
	__u32 queue = ctx->rx_queue_index;
	__u32 *holder = bpf_map_lookup_elem(&queues, &queue);
	if (!holder || *holder != t->owner || t->ring >= MAX_RINGS)
		return count(STAT_WRONG_QUEUE, XDP_PASS);

	// XDP_PASS as the fallback action: if the ring has no XSK (its process died and the kernel
	// removed the socket from the map), the frame goes to the kernel instead of being lost.
	// (A queue found in `queues` is below MAX_QUEUES.)
	int verdict = bpf_redirect_map(&xsks, t->ring * MAX_QUEUES + queue, XDP_PASS);
	return count(verdict == XDP_REDIRECT ? STAT_REDIRECTED : STAT_NO_MATCH, verdict);
}

char _license[] SEC("license") = "Dual MIT/GPL";
