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
// (service-ips, service-nodeports, no-endpoint-services, hairpin ...) and in a few small chains per
// Service port, so a change to one Service touches only its elements and chains. A Builder keeps each
// Service's piece of the ruleset and reuses it while the Service and its EndpointSlices are the same
// objects, so one change among 10k Services is built in microseconds; the sync then diffs only the
// pieces that are new pointers against what the kernel holds (kernelState, which also counts the
// Services sharing an element so that it stays until the last one lets go).
//
// What the kernel is slow at decided the rule shapes, measured at 10k Services x 10 endpoints: an
// anonymous set or map per Service (kube-proxy's "numgen random mod N vmap { ... }", or a dnat map)
// costs the kernel a linear walk over every set of the table to name each new one (over 20 s of
// system time for a cold load); one named map per Service costs a linear lookup by name per
// reference (about 8 s); one shared map that every Service's rule looks up costs a walk over all its
// bindings per element added (about 10 s). So the random endpoint choice is a cascade of plain rules
// (numgen random mod N-i == 0 dnat to ...; each endpoint gets 1/N) with no set at all, which nft
// loads at 10k Services in about 5 s of CPU (3 s parsing in nft, 2 s in the kernel). The cascade runs
// only for a connection's first packet (conntrack keeps the NAT), N/2 rules on average;
// loadBalancerSourceRanges are one rule per range for the same reason. (Not yet done, and the way
// to a faster cold start: endpoints in a few shared maps, each bound by a few hundred rules, with
// numgen ... offset picking a Service's block of elements.)
//
// Every commit that adds a rule or a verdict element makes the kernel validate each chain reachable
// from the base chains (about 70 ms of CPU at 10k Services here); that, not the builder, is the floor
// of a one-Service change.
//
// Full syncs (at start, after a failure, and every --nodeport-sync-period) go through
// sigs.k8s.io/knftables: nft's own syntax (readable golden files, the same text an operator sees in
// nft list), one atomic nft -f transaction, a Fake that checks references for table tests, and the
// library kube-proxy uses. Partial syncs go over netlink with github.com/google/nftables instead,
// because nft reads the whole table back from the kernel before every transaction, about 150 ms of
// CPU at 10k Services however small the change, while a netlink batch costs only its own messages
// and is just as atomic. The netlink path assembles the same bytecode nft generates for the few rule
// and element shapes a Service's piece has (a kernel test compares nft list after both); anything
// else (affinity sets, source ranges, skeleton changes) is sent through nft.
package nodeport
