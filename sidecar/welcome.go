package sidecar

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/wsgate/wsgate/config"
)

// idBytes is the entropy of a client id: 128 bits.
const idBytes = 16

// newID returns a fresh unguessable client id: 128 random bits, base64url
// without padding (22 characters of [A-Za-z0-9_-]), so it contains no ':' and
// works as a Basic-auth user name.
func newID() string {
	var b [idBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// validID reports whether s has the shape of an id newID makes; anything else
// cannot name a client and is not looked up.
func validID(s string) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(idBytes) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// welcomer formats welcome frames. The parts of the push URLs that do not
// depend on the id are rendered once.
type welcomer struct {
	json     bool
	suffixes []string // "@host:port/location", one per advertised host
}

func newWelcomer(c *config.Config, instance int) welcomer {
	w := welcomer{json: c.WebSocket.Welcome == "json"}
	port := strconv.Itoa(c.PushPort(instance))
	for _, h := range c.AdvertiseHosts() {
		w.suffixes = append(w.suffixes, "@"+h+":"+port+c.Location)
	}
	return w
}

// urls returns the client's push URLs.
func (w welcomer) urls(id string) []string {
	urls := make([]string, len(w.suffixes))
	for i, s := range w.suffixes {
		urls[i] = "http://" + id + s
	}
	return urls
}

// frame returns the welcome message: the push URLs joined by "," (the seed's
// format) or {"id": ..., "push": [...]}.
func (w welcomer) frame(id string) []byte {
	urls := w.urls(id)
	if !w.json {
		return []byte(strings.Join(urls, ","))
	}
	b, _ := json.Marshal(struct {
		ID   string   `json:"id"`
		Push []string `json:"push"`
	}{id, urls}) // cannot fail: strings only
	return b
}
