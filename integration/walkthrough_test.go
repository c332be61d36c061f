package integration

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The README's walkthrough, as written: `wsgate up`, `wsgate client` prints
// the welcome, `curl -d hello URL` pushes to it.
func TestReadmeWalkthrough(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed; .ci/run installs it")
	}
	g := startUp(t, 2, "127.0.0.1", "")
	client := exec.Command(wsgateBin, "client", "-n", "2", g.clientWS)
	stdout, err := client.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer client.Process.Kill()
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("wsgate client ended early")
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("wsgate client printed nothing")
		}
		return ""
	}
	welcome, ok := strings.CutPrefix(next(), "welcome: ")
	if !ok || !strings.HasPrefix(welcome, "http://") {
		t.Fatalf("first line %q", welcome)
	}
	url := firstURL(welcome)
	if out, err := exec.Command(curl, "-sS", "-f", "-d", "hello", url).CombinedOutput(); err != nil {
		t.Fatalf("curl -d hello %s: %v\n%s", url, err, out)
	}
	if l := next(); l != "hello" {
		t.Fatalf("client printed %q, want hello", l)
	}
	if out, err := exec.Command(curl, "-sS", "-f", "-H", "Content-Type: application/octet-stream",
		"--data-binary", "\x01\x02", url).CombinedOutput(); err != nil {
		t.Fatalf("binary curl: %v\n%s", err, out)
	}
	if l := next(); l != "binary 2 bytes: 0102" {
		t.Fatalf("client printed %q", l)
	}
	if err := client.Wait(); err != nil {
		t.Fatalf("wsgate client -n 2: %v", err)
	}
}
