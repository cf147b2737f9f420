package agent

import (
	"context"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/memreserve"
)

// Inside the freeze a stop-copy source dumps the container's memory into
// its page cache, and a destination restores it into the new process's
// memory (every strategy but post-copy, which restores without it).
// Where the memory balloon reports free pages to the hypervisor, memory
// the kernel hands out is fresh, and writing it the first time runs at a
// fraction of memory speed (internal/memreserve): so each side faults in
// as much as the container uses ahead of time, in a child process, and
// frees it just before it writes: freed memory stays backed for a few
// seconds here, long enough to be taken again. The source reserves when
// the driver describes the move and frees at the dump; the destination
// reserves when it prepares and frees at the restore, and, for a
// stop-copy, reserves as much again for the checkpoint it receives into
// its tmpfs and frees it as the transfer starts; an abort frees all. The
// reserves are taken before the freeze, so that the time they take is not
// counted as downtime (the driver counts from the dump's start).

// balloonReportsFreePages is read once: the machine's devices do not
// change under a running agent. Tests replace it.
var balloonReportsFreePages = sync.OnceValue(func() bool { return memreserve.Reporting("/") })

// reserveStep is what writes the memory a reserve frees.
type reserveStep string

const (
	reserveDump    reserveStep = "dump"    // a stop-copy source's dump
	reserveReceive reserveStep = "receive" // a stop-copy destination's transfer
	reserveRestore reserveStep = "restore" // a destination's restore
)

// reserveKey names one reserve: a migration's, for one step.
type reserveKey struct {
	id   string
	step reserveStep
}

// reserveMemory faults in n bytes for migration id's step, when this
// machine's balloon reports free pages and the memory available leaves
// what the node keeps (memoryKept) to everything else; otherwise, and if
// one is held already (a repeated call), it does nothing. Failing to
// reserve never fails the migration.
func (a *Agent) reserveMemory(ctx context.Context, id string, step reserveStep, n int64) {
	if n <= 0 || a.cfg.Self == "" || !balloonReportsFreePages() {
		return
	}
	key := reserveKey{id, step}
	a.mig.mu.Lock()
	_, held := a.mig.reserves[key]
	a.mig.mu.Unlock()
	if held {
		return
	}
	log := a.log.With("migration", id, "bytes", n, "for", step)
	avail, total, err := memInfo()
	if err != nil {
		log.Warn("memory not reserved ahead of the freeze: cannot tell the memory available", "err", err)
		return
	}
	if avail-memoryKept(total) < n {
		log.Info("memory not reserved ahead of the freeze: too little available", "mem_available", avail)
		return
	}
	start := time.Now()
	p, err := memreserve.Start(a.cfg.Self, n)
	if err == nil {
		err = p.Wait(ctx)
	}
	if err != nil {
		log.Warn("memory not reserved ahead of the freeze", "err", err)
		if p != nil {
			p.Release()
		}
		return
	}
	log.Info("memory reserved ahead of the freeze: the balloon reports free pages, and fresh memory is slow to write",
		"pid", p.Pid(), "took", time.Since(start).Round(time.Millisecond))
	a.mig.mu.Lock()
	if a.mig.reserves == nil {
		a.mig.reserves = map[reserveKey]*memreserve.Process{}
	}
	a.mig.reserves[key] = p
	a.mig.mu.Unlock()
}

// reservedMemory is how many bytes migration id's reserve for step
// holds.
func (a *Agent) reservedMemory(id string, step reserveStep) int64 {
	a.mig.mu.Lock()
	defer a.mig.mu.Unlock()
	if p, ok := a.mig.reserves[reserveKey{id, step}]; ok {
		return p.Bytes()
	}
	return 0
}

// releaseMemory frees migration id's reserves for steps (all of them
// when none is named) into the kernel's free lists, for what writes next.
// Without a reserve it does nothing.
func (a *Agent) releaseMemory(id string, steps ...reserveStep) {
	if len(steps) == 0 {
		steps = []reserveStep{reserveDump, reserveReceive, reserveRestore}
	}
	for _, step := range steps {
		key := reserveKey{id, step}
		a.mig.mu.Lock()
		p, ok := a.mig.reserves[key]
		delete(a.mig.reserves, key)
		a.mig.mu.Unlock()
		if !ok {
			continue
		}
		if err := p.Release(); err != nil {
			a.log.Warn("the memory reserve's process ended badly", "migration", id, "for", step, "pid", p.Pid(), "err", err)
		}
	}
}
