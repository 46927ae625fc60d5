// Package kubelet is the lab's node agent: it registers a lab node and runs the Pods bound to it as
// built-in programs, each in its own network namespace with an IP from the node's pod range.
//
// The lab calls Run once per node, RunBinder once per lab (there is no scheduler), and Cleanup when
// it starts, to remove what a crashed lab left behind.
package kubelet
