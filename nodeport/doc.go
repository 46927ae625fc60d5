// Package nodeport forwards Service traffic on this node with nftables NAT, as kube-proxy's nftables mode
// does: a pure Build turns the cluster snapshot into the desired ruleset, and Proxy applies it atomically.
//
// The ruleset lives in two tables named "baregate", one of family ip and one of family ip6. Two
// single-family tables rather than one inet table because every map key holds an address whose type
// differs by family anyway, dnat needs the family spelled out in an inet table, and kube-proxy and most
// tooling that users already read (nft list table ip ...) use the same split. Both tables change in one
// transaction.
//
// Per-Service data sits in verdict maps and sets (service-ips, service-nodeports, no-endpoint-services,
// hairpin ...) and in one small chain per Service port, so a change to one Service touches only its
// elements and chains: a partial sync diffs the desired state against the last one applied. Unlike
// kube-proxy there is no chain per endpoint unless the Service uses ClientIP affinity: the endpoint choice
// is a single numgen lookup in an anonymous map (dnat ip to numgen random mod N map {...}), and hairpin
// masquerading is one set lookup in postrouting. That keeps the ruleset about ten times smaller than
// kube-proxy's, which is where the sync time goes.
//
// We program it with sigs.k8s.io/knftables rather than github.com/google/nftables: knftables speaks
// nft's own syntax (readable golden files, the same text an operator sees in nft list), sends a whole
// transaction atomically through one nft -f, has a Fake that checks references for table tests, and is
// what kube-proxy uses, so behaviour can be compared line by line. google/nftables would avoid the nft
// process but needs every expression hand-assembled in netlink bytecode.
package nodeport
