// The Go clients against a running broker: franz-go (kgo, kadm) and Sarama.
//
// Run by tests/e2e/tools.rs as `go-clients <franz|sarama> HOST:PORT [REPLICATION-FACTOR]`
// (tests/e2e/cluster.rs passes 3 against a 3-broker cluster). Each check fails
// with a message and exit code 1; "OK <client>" at the end.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const records = 600

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func main() {
	if len(os.Args) != 3 && len(os.Args) != 4 {
		fail("usage: go-clients <franz|sarama> HOST:PORT [REPLICATION-FACTOR]")
	}
	rf := int16(1)
	if len(os.Args) == 4 {
		n, err := strconv.Atoi(os.Args[3])
		check(err, "replication factor")
		rf = int16(n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	switch os.Args[1] {
	case "franz":
		franz(ctx, os.Args[2], rf)
	case "sarama":
		saramaTest(ctx, os.Args[2], rf)
	default:
		fail("unknown client %q", os.Args[1])
	}
	fmt.Println("OK", os.Args[1])
}

// franz-go: kadm creates the topic, kgo produces (idempotent, acks=all, every codec) and
// consumes in a group with commits, kadm reads the group's offsets and deletes the topic.
func franz(ctx context.Context, bootstrap string, rf int16) {
	const topic, group = "go-franz", "go-franz-group"
	admin, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	check(err, "admin client")
	defer admin.Close()
	adm := kadm.NewClient(admin)
	created, err := adm.CreateTopics(ctx, 3, rf, map[string]*string{"retention.ms": kadm.StringPtr("3600000")}, topic)
	check(err, "CreateTopics")
	check(created.Error(), "CreateTopics result")
	dup, err := adm.CreateTopics(ctx, 3, rf, nil, topic)
	check(err, "CreateTopics again")
	if dup.Error() == nil {
		fail("a duplicate topic was accepted")
	}

	codecs := []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()}
	for i, codec := range codecs {
		p, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ProducerBatchCompression(codec),
			kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(5*time.Millisecond))
		check(err, "producer")
		var recs []*kgo.Record
		for j := i * records / len(codecs); j < (i+1)*records/len(codecs); j++ {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(j % 7)),
				Value: []byte(strconv.Itoa(j)), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("v")}}})
		}
		check(p.ProduceSync(ctx, recs...).FirstErr(), "ProduceSync")
		p.Close()
	}

	c, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	check(err, "consumer")
	seen := map[string]bool{}
	perPartition := map[int32][]int64{}
	for len(seen) < records {
		fetches := c.PollFetches(ctx)
		if errs := fetches.Errors(); len(errs) > 0 {
			fail("fetch: %v", errs)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			seen[string(r.Value)] = true
			perPartition[r.Partition] = append(perPartition[r.Partition], r.Offset)
			if len(r.Headers) != 1 || string(r.Headers[0].Value) != "v" {
				fail("headers lost: %v", r.Headers)
			}
		})
	}
	for p, offs := range perPartition {
		if !sort.SliceIsSorted(offs, func(a, b int) bool { return offs[a] < offs[b] }) || offs[0] != 0 {
			fail("partition %d offsets out of order: %v", p, offs[:5])
		}
	}
	check(c.CommitUncommittedOffsets(ctx), "commit")
	c.Close()

	offsets, err := adm.FetchOffsets(ctx, group)
	check(err, "FetchOffsets")
	var committed int64
	offsets.Each(func(o kadm.OffsetResponse) { committed += o.At })
	if committed != records {
		fail("committed offsets add up to %d, not %d", committed, records)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	check(err, "ListEndOffsets")
	var end int64
	ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
	if end != records {
		fail("end offsets add up to %d, not %d", end, records)
	}
	groups, err := adm.DescribeGroups(ctx, group)
	check(err, "DescribeGroups")
	if g, ok := groups[group]; !ok || g.Err != nil {
		fail("DescribeGroups: %v", groups)
	}
	deleted, err := adm.DeleteTopics(ctx, topic)
	check(err, "DeleteTopics")
	check(deleted.Error(), "DeleteTopics result")
}

// ConsumeClaim runs on a goroutine per partition: the map is shared under a lock.
type handler struct {
	mu   sync.Mutex
	got  map[string]bool
	done chan struct{}
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		s.MarkMessage(m, "")
		h.mu.Lock()
		h.got[string(m.Value)] = true
		if len(h.got) == records {
			select {
			case <-h.done:
			default:
				close(h.done)
			}
		}
		h.mu.Unlock()
	}
	return nil
}

// Sarama: the cluster admin creates the topic, a SyncProducer (acks=all) writes, a
// ConsumerGroup reads everything and commits.
func saramaTest(ctx context.Context, bootstrap string, rf int16) {
	const topic, group = "go-sarama", "go-sarama-group"
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.ClientID = "runnel-e2e"
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Compression = sarama.CompressionSnappy
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	addrs := []string{bootstrap}

	admin, err := sarama.NewClusterAdmin(addrs, cfg)
	check(err, "cluster admin")
	check(admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: rf}, false), "CreateTopic")
	// ListTopics asks any broker: one that has not applied the new topic yet does not list
	// it (metadata propagates to brokers after CreateTopics returns, as in Kafka).
	deadline := time.Now().Add(10 * time.Second)
	for {
		topics, err := admin.ListTopics()
		check(err, "ListTopics")
		d, ok := topics[topic]
		if ok && d.NumPartitions == 3 && d.ReplicationFactor == rf {
			break
		}
		if time.Now().After(deadline) {
			fail("ListTopics: %v", topics[topic])
		}
		time.Sleep(100 * time.Millisecond)
	}

	p, err := sarama.NewSyncProducer(addrs, cfg)
	check(err, "sync producer")
	var msgs []*sarama.ProducerMessage
	for i := 0; i < records; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(strconv.Itoa(i % 5)),
			Value: sarama.StringEncoder(strconv.Itoa(i))})
	}
	check(p.SendMessages(msgs), "SendMessages")
	check(p.Close(), "producer close")

	g, err := sarama.NewConsumerGroup(addrs, group, cfg)
	check(err, "consumer group")
	h := &handler{got: map[string]bool{}, done: make(chan struct{})}
	cctx, stop := context.WithCancel(ctx)
	errs := make(chan error, 1)
	go func() {
		for cctx.Err() == nil {
			if err := g.Consume(cctx, []string{topic}, h); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	select {
	case <-h.done:
	case <-ctx.Done():
		h.mu.Lock()
		fail("consumed %d of %d", len(h.got), records)
	}
	stop()
	check(<-errs, "Consume")
	check(g.Close(), "group close")

	offs, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2}})
	check(err, "ListConsumerGroupOffsets")
	var committed int64
	for _, b := range offs.Blocks[topic] {
		committed += b.Offset
	}
	if committed != records {
		fail("committed offsets add up to %d, not %d", committed, records)
	}
	check(admin.DeleteTopic(topic), "DeleteTopic")
	check(admin.Close(), "admin close")
}
