package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wsgate/wsgate/nginx"
)

func runCheck(args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML configuration `file` (default: the built-in defaults)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errors.New("usage: wsgate check -config FILE")
	}
	c, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "wsgate-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	conf, err := nginx.Standalone(&c, nginx.DefaultOptions(dir))
	if err != nil {
		return err
	}
	name := *cfgPath
	if name == "" {
		name = "built-in defaults"
	}
	fmt.Printf("%s: configuration ok\n", name)

	bin, err := nginx.Binary(&c)
	if errors.Is(err, nginx.ErrNoNginx) {
		fmt.Printf("%v: nginx -t skipped\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	if err := nginx.Modules(&c); err != nil {
		return err
	}
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return err
	}
	out, err := nginx.Command(bin, "-t", "-q", "-p", dir+"/", "-c", file).CombinedOutput()
	os.Stdout.Write(out) // warnings, or why it failed
	if err != nil {
		return fmt.Errorf("%s -t rejected the generated nginx.conf: %v", bin, err)
	}
	// A warning is something wrong that nginx works around, such as a
	// client listen address that takes a push port.
	if bytes.Contains(out, []byte("[warn]")) {
		return fmt.Errorf("%s -t warned about the generated nginx.conf", bin)
	}
	fmt.Printf("%s -t: generated nginx.conf ok\n", bin)
	return nil
}
