// Package lbip gives LoadBalancer Services their external IPs and announces each from one live node:
// allocation from MetalLB pools (leader), gossip liveness, owner election and ARP/NDP (every node).
package lbip
