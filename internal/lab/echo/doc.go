// Package echo is the lab's stand-in for the echo images of the conformance suites: one program that
// answers HTTP/1.1, h2c, WebSocket, gRPC health and UDP with who it is and what it was asked.
//
// Entry points for the lab: `baregate-lab pod-run echo <args>` calls Main(args), and the lab kubelet
// calls ProgramFor(image, command+args) to learn which program and arguments a container's image
// stands for.
package echo
