// Package ui is baregate's dashboard: a live map from external IPs and hosts to routes, Services, pods
// and nodes, served as JSON, a Server-Sent Events stream and an embedded offline web page.
package ui
