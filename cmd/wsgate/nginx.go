package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/nginx"
)

func runNginx(args []string) error {
	fs := flag.NewFlagSet("nginx", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML configuration `file` (default: the built-in defaults)")
	standalone := fs.Bool("standalone", false, "print a complete nginx.conf instead of the snippets for your own nginx")
	state := fs.String("state", filepath.Join(os.TempDir(), "wsgate"), "`dir`ectory for the standalone nginx's pid file, error log and temp files")
	part := fs.String("part", "", "print only one snippet: \"http\" (for http{}), \"location\" (for your server{}) or, with nginx.client_proxy = \"stream\", \"stream\" (for stream{})")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errors.New("usage: wsgate nginx [-config FILE] [-part http|location|stream | -standalone [-state DIR]]")
	}
	c, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	var out string
	switch {
	case *part == "http":
		out, err = nginx.HTTP(&c)
	case *part == "location" && c.Stream():
		return fmt.Errorf("-part location: nginx.client_proxy is %q; its snippets are \"stream\" and \"http\"", c.Nginx.ClientProxy)
	case *part == "stream" && !c.Stream():
		return fmt.Errorf("-part stream: nginx.client_proxy is %q; its snippets are \"http\" and \"location\"", c.Nginx.ClientProxy)
	case *part == "location":
		out, err = nginx.Location(&c)
	case *part == "stream":
		out, err = nginx.Stream(&c)
	case *part != "":
		return fmt.Errorf("-part %q: want \"http\", \"location\" or \"stream\"", *part)
	case *standalone:
		dir, err := filepath.Abs(*state)
		if err != nil {
			return err
		}
		out, err = nginx.Standalone(&c, nginx.DefaultOptions(dir))
	default:
		out, err = nginx.Snippets(&c)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Print(out)
	return err
}

// loadConfig loads path, or returns the defaults when path is empty.
func loadConfig(path string) (config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}
