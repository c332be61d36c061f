// Package nginx renders the nginx configuration that fronts the wsgate
// sidecars, from the same config.Config the sidecars read, so that nginx and
// the sidecars can never disagree about sockets, ports or limits.
//
// HTTP and Location are the two snippets for an existing nginx (what
// `wsgate nginx` prints, joined by Snippets); Standalone is the complete
// nginx.conf that `wsgate up` runs. DefaultOptions and Binary pick its
// worker user and find nginx, and Command runs it, the same way for `up`
// and `check`.
//
// Every value taken from the config is validated first and checked again,
// as it is written, to be a single nginx token, so a config value can never
// add a directive.
//
// wsgate.conf beside this file is the rendering for config.Default(); a test
// fails when it is out of date.
package nginx

//go:generate go test -run ^TestGolden$ -update
