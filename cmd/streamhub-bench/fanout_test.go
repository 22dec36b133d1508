package main

import (
	"context"
	"testing"
)

// mayRun reports whether the publisher may send seq now, without waiting.
func mayRun(f *fanoutFlow, seq uint64) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return f.beforeSend(ctx, seq)
}

func TestFanoutFlowKeepsThePublisherWithinTheWindowOfTheSlowest(t *testing.T) {
	const members, window = 3, 8 // checkpoints every 2 messages
	f := newFanoutFlow(window, members)
	for seq := uint64(1); seq <= window; seq++ {
		if !mayRun(f, seq) {
			t.Fatalf("message %d held back with nothing delivered", seq)
		}
	}
	if mayRun(f, window+1) {
		t.Fatal("the publisher ran more than the window ahead")
	}
	// Two members get everything; the third gets only message 1.
	for m := range members {
		for seq := uint64(1); seq <= window; seq++ {
			if m < 2 || seq == 1 {
				f.delivered(seq)
			}
		}
	}
	if mayRun(f, window+1) {
		t.Fatal("the slowest member has not received message 2: the publisher must wait")
	}
	f.delivered(2)
	f.delivered(3)
	if !mayRun(f, window+2) || mayRun(f, window+3) {
		t.Fatal("once everyone has message 2, messages up to window+2 may go, and no more")
	}
	for seq := uint64(4); seq <= window; seq++ {
		f.delivered(seq)
	}
	for seq := uint64(window + 3); seq <= 2*window; seq++ {
		if !mayRun(f, seq) {
			t.Fatalf("message %d held back once everyone had message %d", seq, window)
		}
	}
	if mayRun(f, 2*window+1) {
		t.Fatal("the publisher ran more than the window ahead")
	}
}

func TestFanoutFlowWakesTheWaitingPublisher(t *testing.T) {
	f := newFanoutFlow(4, 1)
	for seq := uint64(1); seq <= 4; seq++ {
		if !mayRun(f, seq) {
			t.Fatalf("message %d held back", seq)
		}
	}
	allowed := make(chan bool)
	go func() { allowed <- f.beforeSend(context.Background(), 5) }()
	f.delivered(1) // the checkpoint is 1: every message counts
	if !<-allowed {
		t.Fatal("the publisher was not let go")
	}
}
