package sidecar

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// shardCount spreads clients over independently locked maps so that pushes to
// different clients, and connects and disconnects, rarely contend.
const shardCount = 64

// registry maps client ids to clients.
type registry struct {
	seed   maphash.Seed
	count  atomic.Int64
	shards [shardCount]shard
}

type shard struct {
	mu sync.RWMutex
	m  map[string]*client
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].m = make(map[string]*client)
	}
	return r
}

func (r *registry) shard(id string) *shard {
	return &r.shards[maphash.String(r.seed, id)%shardCount]
}

func (r *registry) add(c *client) {
	s := r.shard(c.id)
	s.mu.Lock()
	s.m[c.id] = c
	s.mu.Unlock()
	r.count.Add(1)
}

func (r *registry) remove(c *client) {
	s := r.shard(c.id)
	s.mu.Lock()
	if s.m[c.id] == c {
		delete(s.m, c.id)
		r.count.Add(-1)
	}
	s.mu.Unlock()
}

func (r *registry) get(id string) *client {
	s := r.shard(id)
	s.mu.RLock()
	c := s.m[id]
	s.mu.RUnlock()
	return c
}

// len is the number of registered clients.
func (r *registry) len() int { return int(r.count.Load()) }

// snapshot returns every registered client; the registry is not locked while
// the caller works through them.
func (r *registry) snapshot() []*client {
	out := make([]*client, 0, r.len())
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.RLock()
		for _, c := range s.m {
			out = append(out, c)
		}
		s.mu.RUnlock()
	}
	return out
}
