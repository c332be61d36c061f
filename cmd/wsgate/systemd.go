package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/wsgate/wsgate/systemd"
)

func runSystemd(args []string) error {
	fs := flag.NewFlagSet("systemd", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML configuration `file` (default: the built-in defaults)")
	dir := fs.String("dir", "", "systemd unit `directory` the wsgate units are in (required), e.g. /usr/local/lib/systemd/system")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: wsgate systemd -dir DIR [-config FILE]

Writes the unit drop-ins the TOML needs into DIR, and removes those it no longer
needs: with nginx.push_proxy = "none", DIR/wsgate-push@<i>.socket.d/`+systemd.PushPortDropIn+`
for each instance, which makes systemd listen on the instance's push port
(push.port_base + i - 1 on every push.listen address) instead of its unix socket.
make install runs it. Run systemctl daemon-reload afterwards.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *dir == "" {
		fs.Usage()
		return errors.New("usage: wsgate systemd -dir DIR [-config FILE]")
	}
	c, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	wrote, removed, err := systemd.WriteDropIns(*dir, &c)
	for _, p := range removed {
		fmt.Println("removed", p)
	}
	for _, p := range wrote {
		fmt.Println("wrote", p)
	}
	return err
}
