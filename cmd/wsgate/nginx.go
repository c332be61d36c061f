package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/nginx"
)

func runNginx(args []string) error {
	fs := flag.NewFlagSet("nginx", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML configuration `file` (default: the built-in defaults)")
	standalone := fs.Bool("standalone", false, "print a complete nginx.conf instead of the snippets for your own nginx")
	state := fs.String("state", filepath.Join(os.TempDir(), "wsgate"), "`dir`ectory for the standalone nginx's pid file, error log and temp files")
	part := fs.String("part", "", "print only one snippet: \"stream\" (for stream{}, when nginx.client_proxy or nginx.push_proxy is \"stream\"), \"http\" (for http{}) or \"location\" (for your server{}, when nginx.client_proxy is \"http\")")
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
	renders := map[string]func(*config.Config) (string, error){"stream": nginx.Stream, "http": nginx.HTTP, "location": nginx.Location}
	switch render, ok := renders[*part]; {
	case ok:
		if out, err = render(&c); err == nil && out == "" {
			var have []string
			for _, name := range []string{"stream", "http", "location"} {
				if s, _ := renders[name](&c); s != "" {
					have = append(have, fmt.Sprintf("%q", name))
				}
			}
			return fmt.Errorf("-part %s: empty with nginx.client_proxy = %q and nginx.push_proxy = %q; its snippets are %s", *part, c.Nginx.ClientProxy, c.Nginx.PushProxy, strings.Join(have, " and "))
		}
	case *part != "":
		return fmt.Errorf("-part %q: want \"stream\", \"http\" or \"location\"", *part)
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
