package runnel;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;
import java.io.*;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.file.*;
import java.util.*;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.zip.CRC32C;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.message.RequestHeaderData;
import org.apache.kafka.common.message.ResponseHeaderData;
import org.apache.kafka.common.protocol.ApiKeys;
import org.apache.kafka.common.protocol.ApiMessage;
import org.apache.kafka.common.protocol.ByteBufferAccessor;
import org.apache.kafka.common.protocol.Message;
import org.apache.kafka.common.protocol.ObjectSerializationCache;

/**
 * The differential protocol test: the same requests sent to Apache Kafka and to Runnel, the
 * answers decoded by Kafka's own message classes and compared field by field.
 *
 * <pre>
 * Differential capture --listen HOST:PORT --upstream HOST:PORT --out FILE
 *     A recording proxy in front of a broker (started with --advertised-listener set to the
 *     proxy, so clients come back through it): every request and its answer, as Kafka's JSON
 *     form of the messages, one line each, written to FILE when stdin closes.
 * Differential compare --kafka HOST:PORT --runnel HOST:PORT --corpus DIR --known FILE
 *     Replays every *.jsonl file of DIR (in name order) to both brokers three times: at the
 *     versions captured, then with every request converted to its API's lowest version both
 *     brokers serve, then to the highest. Prints each difference; exits 1 when one is not in
 *     FILE (known differences, each with its reason) or when an API Runnel serves was not
 *     compared at its lowest and highest common versions.
 * </pre>
 *
 * <p>Replay keeps what must differ consistent: topic ids, member ids, fetch session ids and
 * producer ids that a broker handed out replace the captured ones in later requests (producer
 * ids also inside record batches, whose CRC is recomputed). Comparison ignores what must differ
 * by nature: ports, cluster ids, error message texts, throttle times; ids compare as "present".
 */
public final class Differential {
    static final ObjectMapper JSON = new ObjectMapper();
    static final JsonNodeFactory NODES = JsonNodeFactory.instance;

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = new HashMap<>();
        for (int i = 1; i + 1 < args.length; i += 2) {
            opts.put(args[i], args[i + 1]);
        }
        if (args.length == 0) {
            usage();
        }
        switch (args[0]) {
            case "capture" -> capture(need(opts, "--listen"), need(opts, "--upstream"), need(opts, "--out"));
            case "compare" -> System.exit(compare(need(opts, "--kafka"), need(opts, "--runnel"),
                    Path.of(need(opts, "--corpus")), Path.of(need(opts, "--known"))));
            case "consumers" -> {
                consumers(args[1]);
                System.exit(0);
            }
            case "transactions" -> {
                transactions(args[1]);
                System.exit(0);
            }
            default -> usage();
        }
    }

    static void usage() {
        System.err.println("usage: Differential capture --listen H:P --upstream H:P --out FILE\n"
                + "       Differential compare --kafka H:P --runnel H:P --corpus DIR --known FILE");
        System.exit(2);
    }

    static String need(Map<String, String> opts, String k) {
        String v = opts.get(k);
        if (v == null) {
            usage();
        }
        return v;
    }

    // ---------------------------------------------------------------------------------------
    // Messages: frames <-> Kafka's message classes <-> their JSON form.

    static InetSocketAddress addr(String hp) {
        int i = hp.lastIndexOf(':');
        return new InetSocketAddress(hp.substring(0, i), Integer.parseInt(hp.substring(i + 1)));
    }

    static byte[] readFrame(InputStream in) throws IOException {
        DataInputStream d = new DataInputStream(in);
        int n;
        try {
            n = d.readInt();
        } catch (EOFException e) {
            return null;
        }
        byte[] b = new byte[n];
        d.readFully(b);
        return b;
    }

    static Class<?> converter(ApiMessage m) throws ClassNotFoundException {
        return Class.forName("org.apache.kafka.common.message." + m.getClass().getSimpleName() + "JsonConverter");
    }

    static JsonNode toJson(ApiMessage m, short version) {
        try {
            Class<?> c = converter(m);
            Method w = c.getMethod("write", m.getClass(), short.class, boolean.class);
            JsonNode j = (JsonNode) w.invoke(null, m, version, true);
            records(m, j);
            return j;
        } catch (InvocationTargetException e) {
            throw new RuntimeException(e.getCause());
        } catch (ReflectiveOperationException e) {
            throw new RuntimeException(e);
        }
    }

    /**
     * Kafka's JSON converters leave record sets empty (they log requests, not data): the
     * record batches of Produce requests and Fetch answers, as base64, in their place.
     */
    static void records(ApiMessage m, JsonNode j) {
        if (m instanceof org.apache.kafka.common.message.ProduceRequestData p) {
            int ti = 0;
            for (var t : p.topicData()) {
                int pi = 0;
                for (var pd : t.partitionData()) {
                    putRecords(j.get("topicData").get(ti).get("partitionData").get(pi++), pd.records());
                }
                ti++;
            }
        } else if (m instanceof org.apache.kafka.common.message.FetchResponseData f) {
            int ti = 0;
            for (var t : f.responses()) {
                int pi = 0;
                for (var pd : t.partitions()) {
                    putRecords(j.get("responses").get(ti).get("partitions").get(pi++), pd.records());
                }
                ti++;
            }
        }
    }

    static void putRecords(JsonNode node, org.apache.kafka.common.record.internal.BaseRecords r) {
        if (r instanceof org.apache.kafka.common.record.internal.MemoryRecords mr) {
            ByteBuffer b = mr.buffer().duplicate();
            byte[] bytes = new byte[b.remaining()];
            b.get(bytes);
            ((ObjectNode) node).put("records", Base64.getEncoder().encodeToString(bytes));
        }
    }

    static ApiMessage fromJson(ApiMessage proto, JsonNode j, short version) {
        try {
            Class<?> c = converter(proto);
            Method r = c.getMethod("read", JsonNode.class, short.class);
            return (ApiMessage) r.invoke(null, j, version);
        } catch (InvocationTargetException e) {
            Throwable t = e.getCause();
            throw t instanceof RuntimeException re ? re : new RuntimeException(t);
        } catch (ReflectiveOperationException e) {
            throw new RuntimeException(e);
        }
    }

    static ByteBuffer frame(RequestHeaderData h, short hv, Message body, short v) {
        ObjectSerializationCache cache = new ObjectSerializationCache();
        int size = h.size(cache, hv) + body.size(cache, v);
        ByteBuffer b = ByteBuffer.allocate(4 + size);
        b.putInt(size);
        ByteBufferAccessor a = new ByteBufferAccessor(b);
        h.write(a, cache, hv);
        body.write(a, cache, v);
        b.flip();
        return b;
    }

    record Request(RequestHeaderData header, ApiKeys api, ApiMessage body) {}

    static Request parseRequest(byte[] f) {
        ByteBuffer b = ByteBuffer.wrap(f);
        ApiKeys api = ApiKeys.forId(b.getShort(0));
        short v = b.getShort(2);
        RequestHeaderData h = new RequestHeaderData(new ByteBufferAccessor(b), api.requestHeaderVersion(v));
        ApiMessage m = api.messageType.newRequest();
        m.read(new ByteBufferAccessor(b), v);
        return new Request(h, api, m);
    }

    static JsonNode parseResponse(ApiKeys api, short v, byte[] f) {
        try {
            return parseResponseAt(api, v, f);
        } catch (RuntimeException e) {
            // A broker answers an ApiVersions request of a version it does not serve at v0,
            // with UNSUPPORTED_VERSION and its own range (KIP-511).
            if (api == ApiKeys.API_VERSIONS && v > 0) {
                return parseResponseAt(api, (short) 0, f);
            }
            throw e;
        }
    }

    static JsonNode parseResponseAt(ApiKeys api, short v, byte[] f) {
        ByteBuffer b = ByteBuffer.wrap(f);
        new ResponseHeaderData(new ByteBufferAccessor(b), api.responseHeaderVersion(v));
        ApiMessage m = api.messageType.newResponse();
        m.read(new ByteBufferAccessor(b), v);
        if (b.hasRemaining()) {
            throw new IllegalStateException(b.remaining() + " bytes after the " + api.name + " v" + v + " answer");
        }
        return toJson(m, v);
    }

    static boolean expectsResponse(ApiKeys api, JsonNode req) {
        return !(api == ApiKeys.PRODUCE && req.path("acks").asInt() == 0);
    }

    // ---------------------------------------------------------------------------------------
    // Capture: a recording proxy.

    record Captured(long seq, int conn, String clientId, ApiKeys api, short version, JsonNode request, JsonNode response) {}

    static void capture(String listen, String upstream, String out) throws Exception {
        List<Captured> entries = Collections.synchronizedList(new ArrayList<>());
        AtomicLong seq = new AtomicLong();
        AtomicInteger conns = new AtomicInteger();
        ServerSocket server = new ServerSocket();
        server.setReuseAddress(true);
        server.bind(addr(listen));
        Thread acceptor = new Thread(() -> {
            while (true) {
                Socket client;
                try {
                    client = server.accept();
                } catch (IOException e) {
                    return;
                }
                int conn = conns.incrementAndGet();
                new Thread(() -> proxy(client, upstream, conn, seq, entries)).start();
            }
        });
        acceptor.setDaemon(true);
        acceptor.start();
        System.out.println("capturing on " + listen);
        System.out.flush();
        // Until stdin closes.
        while (System.in.read() >= 0) {
        }
        server.close();
        List<Captured> all;
        synchronized (entries) {
            all = new ArrayList<>(entries);
        }
        all.sort(Comparator.comparingLong(Captured::seq));
        try (Writer w = Files.newBufferedWriter(Path.of(out))) {
            for (Captured c : all) {
                // Requests carrying big records (the producer's 900 KB one) only make the
                // corpus heavy: both brokers must refuse or take them alike, which smaller
                // ones show.
                if (c.request().toString().length() > 256 * 1024) {
                    continue;
                }
                ObjectNode line = NODES.objectNode();
                line.put("conn", c.conn());
                line.put("api", c.api().name);
                line.put("apiKey", c.api().id);
                line.put("version", c.version());
                line.put("clientId", c.clientId());
                line.set("request", c.request());
                // The answer only tells the replay which ids the capture's broker handed out:
                // the records it served are left out.
                JsonNode resp = c.response() == null ? NODES.nullNode() : c.response().deepCopy();
                dropRecords(resp);
                line.set("response", resp);
                w.write(JSON.writeValueAsString(line));
                w.write('\n');
            }
        }
        System.out.println("captured " + all.size() + " requests into " + out);
        System.exit(0);
    }

    static void dropRecords(JsonNode n) {
        if (n.isObject() && n.has("records")) {
            ((ObjectNode) n).putNull("records");
        }
        for (JsonNode c : n) {
            if (c.isContainerNode()) {
                dropRecords(c);
            }
        }
    }

    static void proxy(Socket client, String upstream, int conn, AtomicLong seq, List<Captured> entries) {
        record Pending(long seq, String clientId, ApiKeys api, short version, JsonNode request) {}
        Map<Integer, Pending> pending = new ConcurrentHashMap<>();
        try (client; Socket up = new Socket()) {
            up.connect(addr(upstream));
            InputStream cin = client.getInputStream();
            OutputStream cout = client.getOutputStream();
            InputStream uin = up.getInputStream();
            OutputStream uout = up.getOutputStream();
            Thread back = new Thread(() -> {
                try {
                    byte[] f;
                    while ((f = readFrame(uin)) != null) {
                        int corr = ByteBuffer.wrap(f).getInt(0);
                        Pending p = pending.remove(corr);
                        if (p != null) {
                            JsonNode resp;
                            try {
                                resp = parseResponse(p.api(), p.version(), f);
                            } catch (RuntimeException e) {
                                System.err.println("an answer to " + p.api() + " v" + p.version() + " does not parse: " + e);
                                resp = NODES.nullNode();
                            }
                            entries.add(new Captured(p.seq(), conn, p.clientId(), p.api(), p.version(), p.request(), resp));
                        }
                        synchronized (cout) {
                            cout.write(ByteBuffer.allocate(4).putInt(f.length).array());
                            cout.write(f);
                            cout.flush();
                        }
                    }
                } catch (IOException e) {
                    // The client or the broker closed: the other direction ends too.
                } finally {
                    try {
                        client.close();
                    } catch (IOException e) {
                    }
                }
            });
            back.start();
            byte[] f;
            while ((f = readFrame(cin)) != null) {
                Request r = parseRequest(f);
                short v = r.header().requestApiVersion();
                JsonNode req = toJson(r.body(), v);
                long s = seq.incrementAndGet();
                if (expectsResponse(r.api(), req)) {
                    pending.put(r.header().correlationId(), new Pending(s, r.header().clientId(), r.api(), v, req));
                } else {
                    entries.add(new Captured(s, conn, r.header().clientId(), r.api(), v, req, null));
                }
                uout.write(ByteBuffer.allocate(4).putInt(f.length).array());
                uout.write(f);
                uout.flush();
            }
            up.shutdownOutput();
            back.join();
        } catch (Exception e) {
            System.err.println("connection " + conn + ": " + e);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Compare.

    /** One broker under test: its connections and what it handed out. */
    static final class Side {
        final String name;
        final InetSocketAddress address;
        final Map<Integer, Socket> conns = new HashMap<>();
        /** Captured value (as text) -> this broker's, for member, session and producer ids. */
        final Map<String, JsonNode> subst = new HashMap<>();
        final Map<String, String> nameToId = new HashMap<>();
        final Map<String, String> idToName = new HashMap<>();
        final Map<Long, Long> pids = new HashMap<>();
        int correlation = 1;

        Side(String name, String hp) {
            this.name = name;
            this.address = addr(hp);
        }

        Socket conn(int c) throws IOException {
            Socket s = conns.get(c);
            if (s == null) {
                s = new Socket();
                s.connect(address, 10_000);
                s.setSoTimeout(60_000);
                s.setTcpNoDelay(true);
                conns.put(c, s);
            }
            return s;
        }

        void reset() {
            for (Socket s : conns.values()) {
                try {
                    s.close();
                } catch (IOException e) {
                }
            }
            conns.clear();
        }

        /** Sends one request; returns its answer's JSON, null when none is expected. */
        JsonNode call(int c, ApiKeys api, short v, String clientId, ApiMessage body, boolean answer) throws IOException {
            RequestHeaderData h = new RequestHeaderData().setRequestApiKey(api.id).setRequestApiVersion(v)
                    .setCorrelationId(correlation++).setClientId(clientId);
            ByteBuffer f = frame(h, api.requestHeaderVersion(v), body, v);
            Socket s = conn(c);
            s.getOutputStream().write(f.array(), 0, f.limit());
            s.getOutputStream().flush();
            if (!answer) {
                return null;
            }
            byte[] resp = readFrame(s.getInputStream());
            if (resp == null) {
                conns.remove(c);
                throw new EOFException("connection closed");
            }
            int corr = ByteBuffer.wrap(resp).getInt(0);
            if (corr != h.correlationId()) {
                throw new IOException("an answer with correlation id " + corr + " to request " + h.correlationId());
            }
            return parseResponse(api, v, resp);
        }
    }

    /** A known difference: where (API, versions, path) and, optionally, which values. */
    record Known(Pattern api, Pattern version, Pattern path, Pattern kafka, Pattern runnel, String reason, int line) {}

    static List<Known> readKnown(Path p) throws IOException {
        List<Known> out = new ArrayList<>();
        int n = 0;
        for (String raw : Files.readAllLines(p)) {
            n++;
            String line = raw.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            int hash = line.indexOf(" #");
            String reason = hash < 0 ? "" : line.substring(hash + 2).strip();
            String[] parts = (hash < 0 ? line : line.substring(0, hash)).strip().split("\\s+");
            if (parts.length < 3 || parts.length > 5 || reason.isEmpty()) {
                throw new IllegalArgumentException(p + ":" + n
                        + ": want `API VERSIONS PATH [kafka=VALUE] [runnel=VALUE] # reason`");
            }
            Pattern kafka = glob("*");
            Pattern runnel = glob("*");
            for (int i = 3; i < parts.length; i++) {
                if (parts[i].startsWith("kafka=")) {
                    kafka = glob(parts[i].substring(6));
                } else if (parts[i].startsWith("runnel=")) {
                    runnel = glob(parts[i].substring(7));
                } else {
                    throw new IllegalArgumentException(p + ":" + n + ": `" + parts[i] + "`: want kafka=... or runnel=...");
                }
            }
            out.add(new Known(glob(parts[0]), glob(parts[1]), glob(parts[2]), kafka, runnel, reason, n));
        }
        return out;
    }

    /** A glob: `*` matches anything, `,` separates alternatives. */
    static Pattern glob(String g) {
        StringBuilder b = new StringBuilder();
        for (char ch : g.toCharArray()) {
            b.append(ch == '*' ? ".*" : ch == ',' ? "|" : Pattern.quote(String.valueOf(ch)));
        }
        return Pattern.compile(b.toString());
    }

    record Difference(String api, short version, String path, String kafka, String runnel) {
        String line() {
            return api + " v" + version + " " + path + "  kafka=" + kafka + " runnel=" + runnel;
        }
    }

    static int compare(String kafkaAddr, String runnelAddr, Path corpus, Path knownFile) throws Exception {
        List<Known> known = readKnown(knownFile);
        Side kafka = new Side("kafka", kafkaAddr);
        Side runnel = new Side("runnel", runnelAddr);
        Map<ApiKeys, short[]> kafkaApis = apiVersions(kafka);
        Map<ApiKeys, short[]> runnelApis = apiVersions(runnel);
        Map<ApiKeys, short[]> common = new TreeMap<>(Comparator.comparingInt(a -> a.id));
        for (var e : runnelApis.entrySet()) {
            short[] k = kafkaApis.get(e.getKey());
            if (k != null) {
                // Both advertise Produce from v0 (librdkafka's compression check) while
                // refusing v0-2: the lowest version Kafka's own classes still encode.
                short lo = (short) Math.max(Math.max(k[0], e.getValue()[0]), e.getKey().oldestVersion());
                short hi = (short) Math.min(k[1], e.getValue()[1]);
                if (lo <= hi) {
                    common.put(e.getKey(), new short[] {lo, hi});
                }
            }
        }
        List<Path> files;
        try (var s = Files.list(corpus)) {
            files = s.filter(f -> f.toString().endsWith(".jsonl")).sorted().toList();
        }
        List<Difference> diffs = new ArrayList<>();
        Map<ApiKeys, Set<Short>> compared = new HashMap<>();
        Map<String, Integer> skipped = new TreeMap<>();
        int requests = 0;
        for (Path file : files) {
            List<JsonNode> entries = new ArrayList<>();
            for (String line : Files.readAllLines(file)) {
                if (!line.isBlank()) {
                    entries.add(JSON.readTree(line));
                }
            }
            // Captured ids -> topic names, from the captured answers.
            Map<String, String> capturedIdToName = new HashMap<>();
            for (JsonNode e : entries) {
                learnTopicIds(e.get("response"), capturedIdToName, new HashMap<>());
                learnTopicIds(e.get("request"), capturedIdToName, new HashMap<>());
            }
            long newest = 0;
            for (JsonNode e : entries) {
                newest = Math.max(newest, newestTimestamp(e.get("request")));
            }
            for (String pass : List.of("captured", "lowest", "highest")) {
                long started = System.nanoTime();
                // Record timestamps move to the replay's time (spacing kept, the newest a
                // minute ago): a capture months old would otherwise be past both brokers'
                // 7-day retention, which each applies at its own moment of the run.
                passStart = System.currentTimeMillis();
                timeShift = newest > 0 ? passStart - 60_000 - newest : 0;
                kafka.reset();
                runnel.reset();
                for (JsonNode e : entries) {
                    ApiKeys api = ApiKeys.forId(e.get("apiKey").asInt());
                    short captured = (short) e.get("version").asInt();
                    short[] range = common.get(api);
                    short v = captured;
                    if (range != null && !pass.equals("captured")) {
                        v = pass.equals("lowest") ? range[0] : range[1];
                    }
                    int conn = e.get("conn").asInt();
                    String clientId = e.get("clientId").isNull() ? null : e.get("clientId").asText();
                    JsonNode req = e.get("request");
                    JsonNode capturedResp = e.get("response");
                    ApiMessage kBody;
                    ApiMessage rBody;
                    try {
                        kBody = convert(api, substitute(req, kafka, capturedIdToName), v, kafka, capturedIdToName);
                        rBody = convert(api, substitute(req, runnel, capturedIdToName), v, runnel, capturedIdToName);
                    } catch (RuntimeException ex) {
                        skipped.merge(api.name + " v" + v + ": " + ex.getMessage(), 1, Integer::sum);
                        if (v == captured) {
                            // The corpus itself does not decode: a broken corpus, not a pass.
                            diffs.add(new Difference(api.name, v, "(corpus entry does not convert)", "", ex.getMessage()));
                            continue;
                        }
                        v = captured;
                        kBody = convert(api, substitute(req, kafka, capturedIdToName), v, kafka, capturedIdToName);
                        rBody = convert(api, substitute(req, runnel, capturedIdToName), v, runnel, capturedIdToName);
                    }
                    boolean answer = expectsResponse(api, req);
                    requests++;
                    JsonNode kr = exchange(kafka, conn, api, v, clientId, kBody, answer);
                    JsonNode rr = exchange(runnel, conn, api, v, clientId, rBody, answer);
                    if (!answer) {
                        continue;
                    }
                    // Clients retry what is not ready yet (a coordinator loading, a topic
                    // being created): so does the replay, and compares what they settle on.
                    for (int attempt = 0; attempt < 100; attempt++) {
                        boolean kWait = notReady(kr, rr);
                        boolean rWait = notReady(rr, kr);
                        if (!kWait && !rWait) {
                            break;
                        }
                        Thread.sleep(100);
                        if (kWait) {
                            kr = exchange(kafka, conn, api, v, clientId, kBody, true);
                        }
                        if (rWait) {
                            rr = exchange(runnel, conn, api, v, clientId, rBody, true);
                        }
                    }
                    if (kr.has("(no answer)") || rr.has("(no answer)")) {
                        // Neither a comparison nor coverage: both failing alike is still a failure.
                        diffs.add(new Difference(api.name, v, "(no answer)", kr.path("(no answer)").asText("answered"),
                                rr.path("(no answer)").asText("answered")));
                        continue;
                    }
                    if (api == ApiKeys.END_TXN) {
                        // Both brokers answer EndTxn once the outcome is logged and write the
                        // markers after it: the replay waits for each to finish, so what follows
                        // compares the brokers' states rather than their timing.
                        String txnId = req.path("transactionalId").asText();
                        awaitTxnComplete(kafka, conn, clientId, txnId);
                        awaitTxnComplete(runnel, conn, clientId, txnId);
                    }
                    compared.computeIfAbsent(api, k -> new TreeSet<>()).add(v);
                    learn(kafka, capturedResp, kr);
                    learn(runnel, capturedResp, rr);
                    JsonNode kn = normalize(kr, kafka);
                    JsonNode rn = normalize(rr, runnel);
                    List<Difference> found = new ArrayList<>();
                    diff(api.name, v, "", kn, rn, found);
                    if (!found.isEmpty() && System.getenv("DIFFERENTIAL_DEBUG") != null) {
                        System.err.println("== " + file.getFileName() + " " + pass + " " + api.name + " v" + v
                                + "\nrequest " + brief(substitute(req, runnel, capturedIdToName))
                                + "\nkafka  " + kn + "\nrunnel " + rn);
                    }
                    diffs.addAll(found);
                }
                System.out.printf("%s, %s versions: %d ms%n", file.getFileName(), pass,
                        (System.nanoTime() - started) / 1_000_000);
            }
        }
        kafka.reset();
        runnel.reset();

        // Report: differences grouped by their line without values, each once, with a count.
        Map<String, List<Difference>> byKey = new TreeMap<>();
        for (Difference d : diffs) {
            byKey.computeIfAbsent(d.api() + " v" + d.version() + " " + d.path(), k -> new ArrayList<>()).add(d);
        }
        int unknown = 0;
        List<String> news = new ArrayList<>();
        Set<Integer> used = new HashSet<>();
        System.out.println("\n== differences (" + byKey.size() + " distinct, " + diffs.size() + " in all, "
                + requests + " requests replayed)");
        for (var e : byKey.entrySet()) {
            Difference d = e.getValue().get(0);
            Known k = match(known, d);
            String count = e.getValue().size() > 1 ? " (x" + e.getValue().size() + ")" : "";
            if (k == null) {
                unknown++;
                news.add("NEW   " + d.line() + count);
                System.out.println(news.get(news.size() - 1));
            } else {
                used.add(k.line());
                System.out.println("known " + d.line() + count + "  [line " + k.line() + "]");
            }
        }
        for (Known k : known) {
            if (!used.contains(k.line())) {
                System.out.println("note: known difference on line " + k.line() + " did not occur (" + k.reason() + ")");
            }
        }
        if (!skipped.isEmpty()) {
            System.out.println("\n== requests that cannot be expressed at a version (sent at the captured one)");
            skipped.forEach((k, n) -> System.out.println(k + (n > 1 ? " (x" + n + ")" : "")));
        }
        System.out.println("\n== coverage: every API both brokers serve, at its lowest and highest common version");
        int uncovered = 0;
        for (var e : common.entrySet()) {
            Set<Short> got = compared.getOrDefault(e.getKey(), Set.of());
            short lo = e.getValue()[0];
            short hi = e.getValue()[1];
            boolean ok = got.contains(lo) && got.contains(hi);
            if (!ok) {
                uncovered++;
            }
            System.out.printf("%s %-32s common v%d-v%d compared %s%n", ok ? "ok     " : "MISSING",
                    e.getKey().name, lo, hi, got);
        }
        for (ApiKeys api : runnelApis.keySet()) {
            if (!common.containsKey(api)) {
                System.out.println("note: Runnel serves " + api.name + " but Apache Kafka does not (at a common version)");
            }
        }
        System.out.println();
        if (unknown > 0 || uncovered > 0) {
            // Again at the end, where a truncated log still shows them.
            news.forEach(System.out::println);
            System.out.println("FAILED: " + unknown + " new differences, " + uncovered + " APIs not covered at both ends");
            return 1;
        }
        System.out.println("OK: no new differences; every common API compared at both ends");
        return 0;
    }

    /** Polls DescribeTransactions (v0, which both serve) until the transaction has left its
     * Prepare state on that broker, for at most 10 s. */
    static void awaitTxnComplete(Side side, int conn, String clientId, String txnId) throws InterruptedException {
        var body = new org.apache.kafka.common.message.DescribeTransactionsRequestData()
                .setTransactionalIds(List.of(txnId));
        for (int attempt = 0; attempt < 100; attempt++) {
            JsonNode r = exchange(side, conn, ApiKeys.DESCRIBE_TRANSACTIONS, (short) 0, clientId, body, true);
            String state = r.path("transactionStates").path(0).path("transactionState").asText("");
            if (!state.startsWith("Prepare") && !r.has("(no answer)")) {
                return;
            }
            Thread.sleep(100);
        }
    }

    /** Error codes that say "not yet": LEADER_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS,
     * COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, UNSTABLE_OFFSET_COMMIT (a transaction's
     * offsets not yet applied); and UNKNOWN_TOPIC_OR_PARTITION where the other
     * broker knows the topic (a broker learns of a new topic a little after its creation). */
    static boolean notReady(JsonNode mine, JsonNode other) {
        Set<Integer> m = errorCodes(mine, new HashSet<>());
        // (51 and 19: a transaction's markers still being written, which a coordinator
        // answers CONCURRENT_TRANSACTIONS and a partition leader NOT_ENOUGH_REPLICAS.)
        if (m.contains(5) || m.contains(14) || m.contains(15) || m.contains(16) || m.contains(51)
                || m.contains(19) || m.contains(88)) {
            return true;
        }
        return m.contains(3) && !errorCodes(other, new HashSet<>()).contains(3);
    }

    static Set<Integer> errorCodes(JsonNode n, Set<Integer> out) {
        if (n.isObject()) {
            for (String f : List.of("errorCode", "partitionErrorCode")) {
                JsonNode e = n.get(f);
                if (e != null && e.isNumber()) {
                    out.add(e.asInt());
                }
            }
        }
        for (JsonNode c : n) {
            if (c.isContainerNode()) {
                errorCodes(c, out);
            }
        }
        return out;
    }

    static Known match(List<Known> known, Difference d) {
        for (Known k : known) {
            if (k.api().matcher(d.api()).matches() && k.version().matcher("v" + d.version()).matches()
                    && k.path().matcher(d.path()).matches() && k.kafka().matcher(d.kafka()).matches()
                    && k.runnel().matcher(d.runnel()).matches()) {
                return k;
            }
        }
        return null;
    }

    static JsonNode exchange(Side side, int conn, ApiKeys api, short v, String clientId, ApiMessage body, boolean answer) {
        try {
            JsonNode r = side.call(conn, api, v, clientId, body, answer);
            return r;
        } catch (SocketTimeoutException e) {
            side.reset();
            ObjectNode o = NODES.objectNode();
            o.put("(no answer)", "timeout");
            return o;
        } catch (IOException | RuntimeException e) {
            // Closed, or an answer Kafka's classes cannot decode, or not this request's.
            side.reset();
            ObjectNode o = NODES.objectNode();
            o.put("(no answer)", firstLine(e));
            return o;
        }
    }

    static Map<ApiKeys, short[]> apiVersions(Side side) throws IOException {
        ApiMessage req = new org.apache.kafka.common.message.ApiVersionsRequestData()
                .setClientSoftwareName("runnel-differential").setClientSoftwareVersion("1");
        JsonNode r = side.call(0, ApiKeys.API_VERSIONS, (short) 3, "differential", req, true);
        side.reset();
        Map<ApiKeys, short[]> out = new HashMap<>();
        for (JsonNode k : r.get("apiKeys")) {
            short id = (short) k.get("apiKey").asInt();
            if (ApiKeys.hasId(id)) {
                out.put(ApiKeys.forId(id), new short[] {(short) k.get("minVersion").asInt(), (short) k.get("maxVersion").asInt()});
            }
        }
        return out;
    }

    // ---------------------------------------------------------------------------------------
    // Replaying: substitutions and version conversion.

    static final Set<String> NAME_FIELDS = Set.of("name", "topic", "topicName");
    static final Set<String> SUBSTITUTED = Set.of("memberId", "leader", "sessionId", "producerId", "memberEpoch");
    static final String ZERO_UUID = Uuid.ZERO_UUID.toString();

    /** Topic name <-> id pairs found in a message (objects holding both). */
    static void learnTopicIds(JsonNode n, Map<String, String> idToName, Map<String, String> nameToId) {
        if (n == null) {
            return;
        }
        if (n.isObject()) {
            JsonNode id = n.get("topicId");
            if (id != null && id.isTextual() && !id.asText().equals(ZERO_UUID)) {
                for (String f : NAME_FIELDS) {
                    JsonNode name = n.get(f);
                    if (name != null && name.isTextual() && !name.asText().isEmpty()) {
                        idToName.put(id.asText(), name.asText());
                        nameToId.put(name.asText(), id.asText());
                    }
                }
            }
        }
        for (JsonNode c : n) {
            learnTopicIds(c, idToName, nameToId);
        }
    }

    /**
     * What this broker handed out where the capture had other values: walks the captured and
     * the broker's answers in step (by position) and maps each captured member, session or
     * producer id to the broker's.
     */
    static void learn(Side side, JsonNode captured, JsonNode mine) {
        learnTopicIds(mine, side.idToName, side.nameToId);
        if (captured == null || captured.isNull() || mine == null) {
            return;
        }
        walkTogether(captured, mine, null, side);
    }

    static void walkTogether(JsonNode c, JsonNode m, String field, Side side) {
        if (c.isObject() && m.isObject()) {
            for (var it = c.fields(); it.hasNext(); ) {
                var e = it.next();
                JsonNode mv = m.get(e.getKey());
                if (mv != null) {
                    walkTogether(e.getValue(), mv, e.getKey(), side);
                }
            }
        } else if (c.isArray() && m.isArray()) {
            for (int i = 0; i < Math.min(c.size(), m.size()); i++) {
                walkTogether(c.get(i), m.get(i), field, side);
            }
        } else if (field != null && SUBSTITUTED.contains(field) && !c.equals(m)
                && ((c.isTextual() && m.isTextual()) || (c.isNumber() && m.isNumber()))) {
            String k = c.asText();
            if (!k.isEmpty() && !k.equals("0") && !k.equals("-1")) {
                if (field.equals("producerId")) {
                    side.pids.put(c.asLong(), m.asLong());
                } else {
                    side.subst.put(field + "=" + k, m);
                }
            }
        }
    }

    /** The captured request with this broker's ids in place of the captured ones. */
    static JsonNode substitute(JsonNode req, Side side, Map<String, String> capturedIdToName) {
        JsonNode out = req.deepCopy();
        substituteIn(out, side, capturedIdToName);
        return out;
    }

    static void substituteIn(JsonNode n, Side side, Map<String, String> capturedIdToName) {
        if (n.isObject()) {
            ObjectNode o = (ObjectNode) n;
            for (var it = o.fields(); it.hasNext(); ) {
                var e = it.next();
                String f = e.getKey();
                JsonNode v = e.getValue();
                if (f.equals("topicId") && v.isTextual()) {
                    String name = capturedIdToName.get(v.asText());
                    String mine = name == null ? null : side.nameToId.get(name);
                    if (mine != null) {
                        e.setValue(new TextNode(mine));
                    }
                } else if ((f.equals("memberId") || f.equals("leader") || f.equals("sessionId")) && v.isValueNode()) {
                    JsonNode mine = side.subst.get(("leader".equals(f) ? "memberId" : f) + "=" + v.asText());
                    if (mine == null) {
                        mine = side.subst.get(f + "=" + v.asText());
                    }
                    if (mine != null) {
                        e.setValue(mine);
                    }
                } else if ((f.equals("memberEpoch") || f.equals("generationIdOrMemberEpoch")) && v.isNumber()
                        && v.asInt() > 0) {
                    // A KIP-848 member's epoch, as this broker numbered it.
                    JsonNode mine = side.subst.get("memberEpoch=" + v.asText());
                    if (mine != null) {
                        e.setValue(mine);
                    }
                } else if ((f.equals("producerId") || f.equals("v3AndBelowProducerId")) && v.isNumber()) {
                    Long mine = side.pids.get(v.asLong());
                    if (mine != null) {
                        e.setValue(NODES.numberNode(mine));
                    }
                } else if (f.equals("records") && v.isTextual()) {
                    e.setValue(new TextNode(Base64.getEncoder().encodeToString(
                            rewritePids(Base64.getDecoder().decode(v.asText()), side.pids))));
                } else if (f.equals("timestamp") && v.isNumber() && v.asLong() >= 0 && timeShift != 0) {
                    // ListOffsets by time, at the shifted time of the records.
                    e.setValue(NODES.numberNode(v.asLong() + timeShift));
                } else {
                    substituteIn(v, side, capturedIdToName);
                }
            }
        } else if (n.isArray()) {
            for (JsonNode c : n) {
                substituteIn(c, side, capturedIdToName);
            }
        }
    }

    /** How far record timestamps move in this pass (see `compare`), and when it began. */
    static long timeShift;
    static long passStart;

    /** The newest CreateTime timestamp of the record batches anywhere in `n`. */
    static long newestTimestamp(JsonNode n) {
        long newest = 0;
        if (n.isObject()) {
            JsonNode r = n.get("records");
            if (r != null && r.isTextual()) {
                ByteBuffer b = ByteBuffer.wrap(Base64.getDecoder().decode(r.asText()));
                int pos = 0;
                while (pos + 61 <= b.limit()) {
                    int len = b.getInt(pos + 8);
                    if (len < 49 || b.get(pos + 16) != 2) {
                        break;
                    }
                    if ((b.getShort(pos + 21) & 0x08) == 0) {
                        newest = Math.max(newest, b.getLong(pos + 35));
                    }
                    pos += 12 + len;
                }
            }
        }
        for (JsonNode c : n) {
            if (c.isContainerNode()) {
                newest = Math.max(newest, newestTimestamp(c));
            }
        }
        return newest;
    }

    /** Record batches (v2) with their producer ids replaced and CreateTime timestamps moved
     * by `timeShift`, CRC recomputed. */
    static byte[] rewritePids(byte[] records, Map<Long, Long> pids) {
        ByteBuffer b = ByteBuffer.wrap(records);
        int pos = 0;
        while (pos + 61 <= records.length) {
            int len = b.getInt(pos + 8);
            int end = pos + 12 + len;
            if (len < 49 || end > records.length || b.get(pos + 16) != 2) {
                break;
            }
            Long mine = pids.get(b.getLong(pos + 43));
            boolean createTime = (b.getShort(pos + 21) & 0x08) == 0;
            boolean shift = timeShift != 0 && createTime && b.getLong(pos + 27) >= 0;
            if (shift) {
                // A batch with a fixed old timestamp (a test's) still more than 3 days old
                // after the shift moves on to a day ago.
                long by = timeShift;
                long dayAgo = passStart - 86_400_000L;
                if (b.getLong(pos + 35) + by < dayAgo - 2 * 86_400_000L) {
                    by = dayAgo - b.getLong(pos + 35);
                }
                b.putLong(pos + 27, b.getLong(pos + 27) + by);
                b.putLong(pos + 35, b.getLong(pos + 35) + by);
            }
            if (mine != null) {
                b.putLong(pos + 43, mine);
            }
            if (mine != null || shift) {
                CRC32C crc = new CRC32C();
                crc.update(records, pos + 21, end - (pos + 21));
                b.putInt(pos + 17, (int) crc.getValue());
            }
            pos = end;
        }
        return records;
    }

    static final Pattern MISSING = Pattern.compile("unable to locate field '(\\w+)', which is mandatory in version");

    /**
     * The request as Kafka's message at version v. A field mandatory at v but absent from the
     * captured form is filled where it can be derived: a topic id from the topic's name and a
     * name from the id (as this broker knows them); otherwise the conversion fails.
     */
    static ApiMessage convert(ApiKeys api, JsonNode req, short v, Side side, Map<String, String> capturedIdToName) {
        ApiMessage proto = api.messageType.newRequest();
        ObjectNode j = (ObjectNode) req.deepCopy();
        reshape(api, j, v);
        Map<String, JsonNode> defaults = null;
        Set<String> fixed = new HashSet<>();
        while (true) {
            try {
                ApiMessage m = fromJson(proto, j, v);
                // Writing checks what the version cannot carry.
                org.apache.kafka.common.protocol.MessageUtil.toByteBufferAccessor(m, v);
                return m;
            } catch (RuntimeException e) {
                String msg = String.valueOf(e.getMessage());
                Matcher missing = MISSING.matcher(msg);
                Matcher extra = NON_DEFAULT.matcher(msg);
                boolean isMissing = missing.find();
                String f = isMissing ? missing.group(1) : extra.find() ? extra.group(1) : null;
                if (defaults == null) {
                    defaults = defaults(proto, v);
                    defaults(proto, proto.highestSupportedVersion()).forEach(defaults::putIfAbsent);
                }
                boolean ok = f != null && fixed.add(f);
                if (ok && isMissing) {
                    // A mandatory field the captured version did not have: derived where it
                    // can be (a topic id from the name, a name from the id), else its default.
                    ok = fill(j, f, side, capturedIdToName) || (defaults.containsKey(f) && setEverywhere(j, f, defaults.get(f), false));
                } else if (ok) {
                    // A value the version cannot carry: its default instead.
                    ok = defaults.containsKey(f) && setEverywhere(j, f, defaults.get(f), true);
                }
                if (!ok) {
                    if (System.getenv("DIFFERENTIAL_DEBUG") != null) {
                        System.err.println(api + " v" + v + ": " + j + ": " + e);
                    }
                    throw new RuntimeException(firstLine(e));
                }
            }
        }
    }

    static final Pattern NON_DEFAULT = Pattern.compile("Attempted to write a non-default (\\w+) at version");

    /**
     * Requests whose shape changed between versions (one group or key became a list of them,
     * or the reverse): the captured form rewritten to the shape of version v.
     */
    static void reshape(ApiKeys api, ObjectNode j, short v) {
        switch (api) {
            case FIND_COORDINATOR -> {
                if (v >= 4 && !j.has("coordinatorKeys")) {
                    j.set("coordinatorKeys", NODES.arrayNode().add(j.path("key").asText("")));
                    j.remove("key");
                } else if (v < 4 && !j.has("key") && j.path("coordinatorKeys").size() > 0) {
                    j.put("key", j.get("coordinatorKeys").get(0).asText());
                    j.remove("coordinatorKeys");
                }
            }
            case DELETE_TOPICS -> {
                if (v >= 6 && !j.has("topics")) {
                    ArrayNode ts = j.putArray("topics");
                    for (JsonNode n : j.path("topicNames")) {
                        ts.addObject().put("name", n.asText()).put("topicId", ZERO_UUID);
                    }
                } else if (v < 6 && j.has("topics")) {
                    ArrayNode ns = j.putArray("topicNames");
                    for (JsonNode t : j.get("topics")) {
                        ns.add(t.path("name").asText());
                    }
                    j.remove("topics");
                }
            }
            case LEAVE_GROUP -> {
                if (v >= 3 && !j.has("members")) {
                    j.putArray("members").addObject().put("memberId", j.path("memberId").asText(""))
                            .putNull("groupInstanceId").putNull("reason");
                } else if (v < 3 && !j.has("memberId") && j.path("members").size() > 0) {
                    j.put("memberId", j.get("members").get(0).path("memberId").asText(""));
                    j.remove("members");
                }
            }
            case OFFSET_FETCH -> {
                if (v >= 8 && !j.has("groups")) {
                    ObjectNode g = j.putArray("groups").addObject();
                    g.put("groupId", j.path("groupId").asText("")).putNull("memberId").put("memberEpoch", -1);
                    g.set("topics", j.get("topics"));
                } else if (v < 8 && !j.has("groupId") && j.path("groups").size() > 0) {
                    JsonNode g = j.get("groups").get(0);
                    j.put("groupId", g.path("groupId").asText());
                    j.set("topics", g.get("topics"));
                    j.remove("groups");
                }
            }
            case METADATA -> {
                // v0 has no null topics: an empty list means every topic.
                if (v == 0 && j.path("topics").isNull()) {
                    j.putArray("topics");
                }
            }
            default -> {}
        }
    }

    /** Default values of every field of the message and of its nested structures, at v. */
    static Map<String, JsonNode> defaults(ApiMessage proto, short v) {
        Map<String, JsonNode> out = new HashMap<>();
        List<Object> instances = new ArrayList<>();
        instances.add(proto);
        for (Class<?> inner : proto.getClass().getDeclaredClasses()) {
            if (Message.class.isAssignableFrom(inner)) {
                try {
                    instances.add(inner.getConstructor().newInstance());
                } catch (ReflectiveOperationException e) {
                    // (no default constructor: nothing to learn from it)
                }
            }
        }
        for (Object o : instances) {
            try {
                String conv = "org.apache.kafka.common.message." + proto.getClass().getSimpleName() + "JsonConverter";
                if (o != proto) {
                    conv += "$" + o.getClass().getSimpleName() + "JsonConverter";
                }
                JsonNode d = (JsonNode) Class.forName(conv).getMethod("write", o.getClass(), short.class).invoke(null, o, v);
                d.fields().forEachRemaining(e -> out.putIfAbsent(e.getKey(), e.getValue()));
            } catch (ReflectiveOperationException | RuntimeException e) {
                // A structure the version does not have.
            }
        }
        return out;
    }

    /**
     * Sets `field` to `value` in every object of the tree that has it (`present`) or lacks it
     * (not `present`); whether any was set. (Objects of other structures that get a field
     * they do not have are harmless: Kafka's JSON readers ignore unknown fields.)
     */
    static boolean setEverywhere(JsonNode n, String field, JsonNode value, boolean present) {
        boolean any = false;
        if (n.isObject() && n.has(field) == present) {
            ((ObjectNode) n).set(field, value);
            any = true;
        }
        for (JsonNode c : n) {
            if (c.isContainerNode()) {
                any |= setEverywhere(c, field, value, present);
            }
        }
        return any;
    }

    static String firstLine(Throwable e) {
        String m = String.valueOf(e.getMessage());
        int nl = m.indexOf('\n');
        return nl < 0 ? m : m.substring(0, nl);
    }

    static boolean fill(JsonNode n, String field, Side side, Map<String, String> capturedIdToName) {
        boolean any = false;
        if (n.isObject()) {
            ObjectNode o = (ObjectNode) n;
            if (!o.has(field)) {
                if (field.equals("topicId")) {
                    String name = null;
                    for (String nf : NAME_FIELDS) {
                        if (o.path(nf).isTextual()) {
                            name = o.get(nf).asText();
                        }
                    }
                    if (name != null) {
                        o.put("topicId", side.nameToId.getOrDefault(name, ZERO_UUID));
                        any = true;
                    }
                } else if (NAME_FIELDS.contains(field) && o.path("topicId").isTextual()) {
                    String id = o.get("topicId").asText();
                    String name = side.idToName.get(id);
                    if (name == null) {
                        name = capturedIdToName.getOrDefault(id, "");
                    }
                    o.put(field, name);
                    any = true;
                }
            }
        }
        for (JsonNode c : n) {
            any |= fill(c, field, side, capturedIdToName);
        }
        return any;
    }

    // ---------------------------------------------------------------------------------------
    // Normalizing and comparing answers.

    /** Fields whose values must differ between two brokers: compared as "present" or ignored. */
    static JsonNode normalize(JsonNode n, Side side) {
        JsonNode out = n.deepCopy();
        normalizeIn(out, side);
        return out;
    }

    static void normalizeIn(JsonNode n, Side side) {
        if (n.isObject()) {
            ObjectNode o = (ObjectNode) n;
            List<String> drop = new ArrayList<>();
            for (var it = o.fields(); it.hasNext(); ) {
                var e = it.next();
                String f = e.getKey();
                JsonNode v = e.getValue();
                switch (f) {
                    case "throttleTimeMs", "clusterId", "port" -> drop.add(f);
                    case "clientInstanceId", "subscriptionId" -> e.setValue(new TextNode("<id>"));
                    // KIP-848 epochs are opaque counters each broker advances its own way
                    // (ARCHITECTURE.md): compared as fenced (-1), joining (0) or current.
                    case "memberEpoch", "groupEpoch", "assignmentEpoch" -> {
                        if (v.isNumber() && v.asInt() > 0) {
                            e.setValue(new TextNode("<epoch>"));
                        }
                    }
                    // A config's synonyms: its own override (DYNAMIC_TOPIC_CONFIG) compares;
                    // the defaults it falls back to are each broker's own settings
                    // (Kafka's log.* configs, Runnel's flags; ARCHITECTURE.md).
                    case "synonyms" -> {
                        if (v.isArray()) {
                            ArrayNode a = (ArrayNode) v;
                            for (int i = a.size() - 1; i >= 0; i--) {
                                if (a.get(i).path("source").asInt() != 1) {
                                    a.remove(i);
                                }
                            }
                        }
                    }
                    // A file system's size and free space (DescribeLogDirs v4): moving figures.
                    case "totalBytes", "usableBytes" -> {
                        if (v.isNumber() && v.asLong() > 0) {
                            e.setValue(new TextNode("<bytes>"));
                        }
                    }
                    case "logDir", "path" -> {
                        if (v.isTextual()) {
                            e.setValue(new TextNode("<data-dir>"));
                        }
                    }
                    case "errorMessage", "message" -> {
                        if (v.isTextual()) {
                            e.setValue(new TextNode(v.asText().isEmpty() ? "" : "<text>"));
                        }
                    }
                    case "topicId" -> {
                        if (v.isTextual() && !v.asText().equals(ZERO_UUID)) {
                            e.setValue(new TextNode("<id of " + side.idToName.getOrDefault(v.asText(), "?") + ">"));
                        }
                    }
                    case "memberId", "leader", "leaderId" -> {
                        if (v.isTextual() && !v.asText().isEmpty()) {
                            e.setValue(new TextNode("<member id>"));
                        }
                    }
                    case "sessionId" -> {
                        if (v.isNumber() && v.asLong() != 0) {
                            e.setValue(new TextNode("<session id>"));
                        }
                    }
                    case "producerId" -> {
                        if (v.isNumber() && v.asLong() >= 0) {
                            e.setValue(new TextNode("<producer id>"));
                        }
                    }
                    case "records" -> {
                        if (v.isTextual()) {
                            e.setValue(batches(Base64.getDecoder().decode(v.asText())));
                        }
                    }
                    default -> normalizeIn(v, side);
                }
            }
            drop.forEach(o::remove);
        } else if (n.isArray()) {
            for (JsonNode c : n) {
                normalizeIn(c, side);
            }
        }
    }

    /** Record batches decoded field by field (v2 header; the records section as a digest). */
    static JsonNode batches(byte[] records) {
        ArrayNode out = NODES.arrayNode();
        ByteBuffer b = ByteBuffer.wrap(records);
        int pos = 0;
        while (pos + 12 <= records.length) {
            int len = b.getInt(pos + 8);
            int end = pos + 12 + len;
            ObjectNode o = out.addObject();
            o.put("baseOffset", b.getLong(pos));
            if (end > records.length || len < 49) {
                o.put("partial", records.length - pos);
                break;
            }
            o.put("batchLength", len);
            o.put("partitionLeaderEpoch", b.getInt(pos + 12));
            o.put("magic", b.get(pos + 16));
            o.put("attributes", b.getShort(pos + 21));
            o.put("lastOffsetDelta", b.getInt(pos + 23));
            if ((b.getShort(pos + 21) & 0x20) != 0) {
                // A transaction marker: stamped with its broker's clock when written.
                o.put("baseTimestamp", "<marker time>");
                o.put("maxTimestamp", "<marker time>");
            } else {
                o.put("baseTimestamp", b.getLong(pos + 27));
                o.put("maxTimestamp", b.getLong(pos + 35));
            }
            o.put("producerId", b.getLong(pos + 43) >= 0 ? "<producer id>" : "-1");
            o.put("producerEpoch", b.getShort(pos + 51));
            o.put("baseSequence", b.getInt(pos + 53));
            o.put("recordCount", b.getInt(pos + 57));
            CRC32C crc = new CRC32C();
            crc.update(records, pos + 61, end - (pos + 61));
            o.put("recordsDigest", Long.toHexString(crc.getValue()));
            pos = end;
        }
        return out;
    }

    /** Fields that identify an element of an array, in order of preference. */
    static final List<String> KEYS = List.of("apiKey", "name", "topic", "topicName", "topicId", "partitionIndex",
            "partition", "partitionId", "index", "groupId", "transactionalId", "resourceName", "key", "brokerId", "nodeId",
            "logDir", "path");

    static void diff(String api, short v, String path, JsonNode k, JsonNode r, List<Difference> out) {
        if (k == null || r == null) {
            out.add(new Difference(api, v, path, k == null ? "(absent)" : brief(k), r == null ? "(absent)" : brief(r)));
            return;
        }
        if (k.isObject() && r.isObject()) {
            Set<String> fields = new TreeSet<>();
            k.fieldNames().forEachRemaining(fields::add);
            r.fieldNames().forEachRemaining(fields::add);
            for (String f : fields) {
                diff(api, v, path + "/" + f, k.get(f), r.get(f), out);
            }
            return;
        }
        if (k.isArray() && r.isArray()) {
            String key = arrayKey(k, r);
            if (key == null && UNORDERED.stream().anyMatch(path::endsWith)) {
                // Elements without a key the brokers agree on (producer ids differ), in an
                // order each broker's hash maps give: compared as sorted lists.
                k = sorted(k);
                r = sorted(r);
            }
            if (key == null) {
                for (int i = 0; i < Math.max(k.size(), r.size()); i++) {
                    diff(api, v, path + "[" + i + "]", k.get(i), r.get(i), out);
                }
            } else {
                Map<String, JsonNode> km = keyed(k, key);
                Map<String, JsonNode> rm = keyed(r, key);
                Set<String> all = new TreeSet<>(km.keySet());
                all.addAll(rm.keySet());
                for (String e : all) {
                    diff(api, v, path + "[" + key + "=" + e + "]", km.get(e), rm.get(e), out);
                }
            }
            return;
        }
        if (!k.equals(r)) {
            out.add(new Difference(api, v, path, brief(k), brief(r)));
        }
    }

    /** Arrays whose order means nothing and whose elements have no key both brokers share. */
    static final List<String> UNORDERED = List.of("/activeProducers");

    static JsonNode sorted(JsonNode a) {
        List<JsonNode> l = new ArrayList<>();
        a.forEach(l::add);
        l.sort(Comparator.comparing(JsonNode::toString));
        var out = NODES.arrayNode();
        l.forEach(out::add);
        return out;
    }

    static String arrayKey(JsonNode k, JsonNode r) {
        for (String key : KEYS) {
            boolean all = true;
            for (JsonNode a : List.of(k, r)) {
                for (JsonNode e : a) {
                    all &= e.isObject() && e.has(key) && e.get(key).isValueNode();
                }
            }
            if (all && (k.size() + r.size()) > 0) {
                return key;
            }
        }
        return null;
    }

    static Map<String, JsonNode> keyed(JsonNode a, String key) {
        Map<String, JsonNode> m = new LinkedHashMap<>();
        for (JsonNode e : a) {
            String id = e.get(key).asText();
            String k = id;
            for (int i = 2; m.containsKey(k); i++) {
                k = id + "#" + i;
            }
            m.put(k, e);
        }
        return m;
    }

    static String brief(JsonNode n) {
        String s = n.toString();
        return s.length() > 120 ? s.substring(0, 117) + "..." : s;
    }

    // ---------------------------------------------------------------------------------------
    // A client workload for the corpus that ClientsTest's cases do not make on their own:
    // one member at a time (replay is sequential, so a group of several members waiting on
    // each other cannot be replayed), in both group protocols, with seeks and lookups by time.

    /**
     * The transaction workload: a transactional producer that commits one transaction with
     * its consumer's offsets and aborts another, a read_committed consumer, a fenced
     * producer, and the admin calls that describe transactions.
     */
    static void transactions(String bootstrap) throws Exception {
        ClientsTest.bootstrap = bootstrap;
        String topic = "d-txn";
        try (var a = ClientsTest.admin_()) {
            ClientsTest.createTopic(a, topic, 2, Map.of());
        }
        ClientsTest.produceN(topic, 2, 4, 1_700_000_000_000L);
        var tp0 = new org.apache.kafka.common.TopicPartition(topic, 0);
        try (var c = ClientsTest.consumer(Map.of(
                        org.apache.kafka.clients.consumer.ConsumerConfig.GROUP_ID_CONFIG, "d-txn-group",
                        org.apache.kafka.clients.consumer.ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed"));
                var p = ClientsTest.producer(Map.of(
                        org.apache.kafka.clients.producer.ProducerConfig.TRANSACTIONAL_ID_CONFIG, "d-txn-producer"))) {
            c.assign(List.of(tp0));
            c.seekToBeginning(List.of(tp0));
            c.poll(java.time.Duration.ofMillis(500));
            p.initTransactions();
            p.beginTransaction();
            for (int i = 0; i < 4; i++) {
                p.send(new org.apache.kafka.clients.producer.ProducerRecord<>(topic, i % 2, "k" + i,
                        ("committed " + i).getBytes())).get();
            }
            p.sendOffsetsToTransaction(Map.of(tp0, new org.apache.kafka.clients.consumer.OffsetAndMetadata(2)),
                    c.groupMetadata());
            p.commitTransaction();
            p.beginTransaction();
            p.send(new org.apache.kafka.clients.producer.ProducerRecord<>(topic, 1, "k", "aborted".getBytes())).get();
            p.flush();
            p.abortTransaction();
            // The committed records and the consumer's offsets in it, read back committed.
            c.seekToBeginning(List.of(tp0));
            c.poll(java.time.Duration.ofMillis(500));
            c.committed(Set.of(tp0));
            c.endOffsets(List.of(tp0));
        }
        // A second instance fences the first.
        try (var p = ClientsTest.producer(Map.of(
                org.apache.kafka.clients.producer.ProducerConfig.TRANSACTIONAL_ID_CONFIG, "d-txn-producer"))) {
            p.initTransactions();
        }
        try (var a = ClientsTest.admin_()) {
            a.listTransactions().all().get();
            a.describeTransactions(List.of("d-txn-producer")).all().get();
            a.describeProducers(List.of(tp0)).all().get();
            a.deleteTopics(List.of(topic)).all().get();
        }
    }

    static void consumers(String bootstrap) throws Exception {
        ClientsTest.bootstrap = bootstrap;
        String topic = "d-consumers";
        try (var a = ClientsTest.admin_()) {
            ClientsTest.createTopic(a, topic, 2, Map.of());
        }
        ClientsTest.produceN(topic, 2, 20, 1_700_000_000_000L);
        for (String protocol : List.of("classic", "consumer")) {
            String group = "d-" + protocol;
            var conf = new HashMap<String, Object>(Map.of(
                    org.apache.kafka.clients.consumer.ConsumerConfig.GROUP_ID_CONFIG, group,
                    org.apache.kafka.clients.consumer.ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol));
            try (var c = ClientsTest.consumer(conf)) {
                c.subscribe(List.of(topic));
                int got = 0;
                long deadline = System.currentTimeMillis() + 60_000;
                while (got < 20) {
                    ClientsTest.check(System.currentTimeMillis() < deadline, protocol + " group read " + got);
                    got += c.poll(java.time.Duration.ofMillis(100)).count();
                }
                c.commitSync();
                try (var a = ClientsTest.admin_()) {
                    a.describeConsumerGroups(List.of(group)).all().get();
                    a.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
                }
            }
        }
        // Assigned, not subscribed: offsets by time, seeks, committed offsets without a group.
        var tp = new org.apache.kafka.common.TopicPartition(topic, 0);
        try (var c = ClientsTest.consumer(Map.of(
                org.apache.kafka.clients.consumer.ConsumerConfig.GROUP_ID_CONFIG, "d-assigned"))) {
            c.assign(List.of(tp));
            c.offsetsForTimes(Map.of(tp, 1_700_000_000_005L));
            c.beginningOffsets(List.of(tp));
            c.endOffsets(List.of(tp));
            c.seek(tp, new org.apache.kafka.clients.consumer.OffsetAndMetadata(3, java.util.Optional.of(0), ""));
            c.poll(java.time.Duration.ofMillis(500));
            c.commitSync(Map.of(tp, new org.apache.kafka.clients.consumer.OffsetAndMetadata(5)));
            c.committed(Set.of(tp));
        }
        // The admin calls ClientsTest's cases do not make.
        try (var a = ClientsTest.admin_()) {
            a.describeProducers(List.of(tp)).all().get();
            a.electLeaders(org.apache.kafka.common.ElectionType.PREFERRED, Set.of(tp)).partitions().get();
            a.alterPartitionReassignments(Map.of(tp, java.util.Optional.of(
                    new org.apache.kafka.clients.admin.NewPartitionReassignment(List.of(1))))).all().get();
            a.listPartitionReassignments().reassignments().get();
            a.deleteConsumerGroupOffsets("d-assigned", Set.of(tp)).all().get();
        }
        System.out.println("OK");
    }
}
