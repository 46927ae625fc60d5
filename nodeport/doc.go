// Package nodeport forwards Service traffic on this node with nftables NAT, as kube-proxy's nftables mode
// does: a pure Build turns the cluster snapshot into the desired ruleset, and Proxy applies it atomically.
//
// The ruleset lives in two tables named "baregate", one of family ip and one of family ip6. Two
// single-family tables rather than one inet table because every map key holds an address whose type
// differs by family anyway, dnat needs the family spelled out in an inet table, and kube-proxy and most
// tooling that users already read (nft list table ip ...) use the same split. Both tables change in one
// transaction.
//
// Per-Service data sits in shared verdict maps and sets keyed by address . protocol . port
// (service-ips, service-nodeports, no-endpoint-services, hairpin ...), so a change to one Service
// touches only its elements. A Builder keeps each Service's piece of the ruleset and reuses it while
// the Service and its EndpointSlices are the same objects, so one change among 10k Services is built
// in microseconds; the sync then diffs only the pieces that are new pointers against what the kernel
// holds (kernelState, which also counts the Services sharing an element so that it stays until the
// last one lets go).
//
// Most Services take the fast path, where even the endpoints are data: each frontend (address .
// protocol . port, or protocol . port for a NodePort) with N endpoints has N slot elements in
// frontend-endpoints (or nodeport-endpoints), keyed by the frontend and a slot 0..N-1 and mapping to
// an endpoint address . port, and its dispatch element sends it to pick-N (nodeport-pick-N), one
// chain per endpoint count in use, whose one rule is "dnat to <frontend> . numgen random mod N map
// @frontend-endpoints". External frontends are masqueraded by membership in external-masq and
// nodeport-masq, checked by fixed rules before the dispatch. So a Service has no rule of its own, and
// an endpoint change is elements only. internalTrafficPolicy Local fits (the ClusterIP frontend
// lists the local endpoints, the others all of them); session affinity, loadBalancerSourceRanges and
// externalTrafficPolicy Local keep a few chains per Service port: a cascade of "numgen random mod
// N-i == 0 dnat to ..." rules (each endpoint gets 1/N), affinity sets, one rule per source range, and
// the ext chain that sends pods and the node itself to all endpoints.
//
// What the kernel is slow at decided these shapes, measured at 10k Services x 10 endpoints: an
// anonymous set or map per Service (kube-proxy's "numgen random mod N vmap { ... }", or a dnat map)
// costs the kernel a linear walk over every set of the table to name each new one (over 20 s of
// system time for a cold load); one named map per Service costs a linear lookup by name per
// reference (about 8 s); one shared map that every Service's rule looks up costs a walk over all its
// bindings per element added (about 10 s). The endpoint maps are bound by one rule per distinct
// endpoint count (a handful), so that walk is short. Any commit that adds a rule with a jump or dnat,
// or a verdict element, makes the kernel validate every chain reachable from the base chains: with
// the rule cascades of every Service that was about 70 ms of CPU at 10k Services, the floor of a
// one-Service change; with fast-path Services it is about 1.7 ms (replacing one service-ips verdict
// element costs 2.5 ms of CPU, one slot element 0.9 ms). That is why a frontend moves between pick-N
// chains through a verdict map rather than through sets of frontends by N matched by one rule per N
// (which would need no validation on a move, but costs each new connection a lookup per distinct N,
// and a rule, hence a validation, for each new N anyway): at 1.7 ms the O(1) dispatch is worth it.
// Closing an nftables socket after a commit that deleted elements waits for the kernel to release
// them (an RCU grace period, about 12 ms of wall time here), so partial syncs keep one socket open
// (lastingNetlink). Interval (pipapo) maps for the slots are out: 100k concatenated-range elements
// took 23 s of system time and ENOBUFS.
//
// nft 1.0.6 cannot add a rule that maps through a typeof map whose data has "th dport" once the map
// exists in the kernel ("conflicting protocols specified"), though it can when the map is created in
// the same transaction: a full sync through nft deletes and re-adds the endpoint maps, and a partial
// sync that would need nft for a pick-N rule does a full sync instead (the netlink path adds those
// rules as bytecode and never meets this).
//
// Full syncs (at start, after a failure, and every --nodeport-sync-period) are written with
// sigs.k8s.io/knftables: nft's own syntax (readable golden files, the same text an operator sees in
// nft list), one atomic nft -f transaction (run with each set's elements grouped a thousand to a
// command, which nft parses faster), a Fake that checks references for table tests, and the library
// kube-proxy uses. nft parses an element in about 6 µs, which at 10k Services (150k elements) is
// most of a full sync, so a cold start (no baregate table in the kernel yet) sends the rules
// through nft and then all the Services' elements as one netlink batch (coldStart): the first step
// forwards nothing, since every way into a Service goes through an element, and the second turns
// every Service on at once. While nft runs, the kernel state is built set by set on every core and
// each set's elements are written straight into netlink messages (prepareColdStart, setElemBatch:
// google/nftables' own marshalling allocated about 60 MB for them). At 10k Services x 10 endpoints
// a cold start takes 0.55-0.6 s of wall time and about 0.9 s of CPU on two cores at a load of about
// 1 (BenchmarkKernelSync): Build 0.15-0.2 s of wall time on both cores, the kernel state and
// encoding about 0.15 s after nft, and the kernel's insert of the 152k elements about 0.24 s of CPU
// in the sending thread. Go's garbage collection of the 100-200 MB heap is about 0.3 s of that CPU
// (with GOGC=off the same run takes 0.43 s of wall time and 0.56 s of CPU): Build's per-element
// strings and maps are what is left to shrink. A full sync over existing tables (a restart, the periodic one) is still
// one nft transaction, about 2.7 s of CPU at 10k Services; what it must flush and delete is listed
// over netlink, since nft 1.0.6 reads every element to list even the names (about 2 s of CPU at
// 10k). Partial syncs go over netlink with github.com/google/nftables, because nft reads the whole
// table back from the kernel before every transaction, about 150 ms of CPU at 10k Services however
// small the change, while a netlink batch costs only its own messages and is just as atomic. The
// netlink path assembles the same bytecode nft generates for the shapes a Service's piece and the
// pick-N chains have (a kernel test compares nft list after both); anything else (adding affinity
// sets, source ranges, skeleton changes) is sent through nft. (Not yet done: the whole full sync
// over netlink, which would make restarts and the periodic sync as fast as a cold start; it needs
// the skeleton's rules, the interval set and nft's typeof user data assembled by hand.)
package nodeport
