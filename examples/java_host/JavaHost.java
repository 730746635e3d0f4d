// A Java HTTP server that embeds Processor through JNA (Debian: apt-get install libjna-java): the JDK's
// com.sun.net.httpserver serves from a pool of threads, each calling the library's process().
//
//   java -cp /usr/share/java/jna.jar:OUT JavaHost LIBRARY CONFIG.json [--address HOST:PORT] [--threads N]
//
// POST /predict     body: a serialized PredictRequest (protos/predict.proto); 200 with the serialized
//                   PredictResponse, or the library's code (400, 503, 500) with its message as text/plain.
// GET  /model_info  the serialized ServingModelInfo.
//
// Prints "listening on HOST:PORT" once it serves (port 0 picks a free one). SIGTERM or SIGINT stops it:
// in-flight requests finish (up to 5 s), the model is finalized, it prints "stopped" and exits 0.
// Build: make (javac, see Makefile).
import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.PointerByReference;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

public final class JavaHost {
  /** The C ABI of include/processor.h, bound by JNA's direct mapping to the library given at start. */
  static final class Library {
    static native Pointer initialize(String modelEntry, String modelConfig, IntByReference state);
    static native int process(Pointer model, byte[] input, int inputSize, PointerByReference output,
                              IntByReference outputSize);
    static native int get_serving_model_info(Pointer model, PointerByReference output, IntByReference outputSize);
    static native void free_buffer(Pointer buffer);
    static native void finalize(Pointer model);
  }

  /** A code from the library and the bytes it returned (a message unless the code is 200). */
  record Answer(int code, byte[] body) {
    /** Copies the library's buffer into the Java heap and releases it with free_buffer(). */
    static Answer take(int code, PointerByReference output, IntByReference size) {
      Pointer data = output.getValue();
      try {
        return new Answer(code, data == null ? new byte[0] : data.getByteArray(0, size.getValue()));
      } finally {
        Library.free_buffer(data);
      }
    }
  }

  /** An initialized model; its methods may be called from any thread. */
  static final class Model {
    private final Pointer handle;

    Model(Pointer handle) { this.handle = handle; }

    Answer process(byte[] request) {
      PointerByReference output = new PointerByReference();
      IntByReference size = new IntByReference();
      int code = Library.process(handle, request, request.length, output, size);
      return Answer.take(code, output, size);
    }

    Answer modelInfo() {
      PointerByReference output = new PointerByReference();
      IntByReference size = new IntByReference();
      int code = Library.get_serving_model_info(handle, output, size);
      return Answer.take(code, output, size);
    }
  }

  static void reply(HttpExchange exchange, Answer answer) throws IOException {
    exchange.getResponseHeaders().set("Content-Type",
        answer.code() == 200 ? "application/x-protobuf" : "text/plain; charset=utf-8");
    exchange.sendResponseHeaders(answer.code(), answer.body().length == 0 ? -1 : answer.body().length);
    try (OutputStream out = exchange.getResponseBody()) {
      out.write(answer.body());
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 2) {
      System.err.println("usage: JavaHost LIBRARY CONFIG.json [--address HOST:PORT] [--threads N]");
      System.exit(2);
    }
    String address = "127.0.0.1:8080";
    int threads = 8;
    for (int i = 2; i + 1 < args.length; i += 2) {
      if (args[i].equals("--address")) address = args[i + 1];
      else if (args[i].equals("--threads")) threads = Integer.parseInt(args[i + 1]);
    }
    CountDownLatch stop = new CountDownLatch(1);
    sun.misc.Signal.handle(new sun.misc.Signal("TERM"), signal -> stop.countDown());
    sun.misc.Signal.handle(new sun.misc.Signal("INT"), signal -> stop.countDown());

    Native.register(Library.class, NativeLibrary.getInstance(args[0]));
    String config = Files.readString(Path.of(args[1]));
    Pointer handle = Library.initialize("", config, new IntByReference());
    if (handle == null) System.exit(1);  // the library said why on stderr
    Model model = new Model(handle);

    int colon = address.lastIndexOf(':');
    HttpServer server = HttpServer.create(
        new InetSocketAddress(address.substring(0, colon), Integer.parseInt(address.substring(colon + 1))), 0);
    server.createContext("/predict", exchange -> {
      if (!exchange.getRequestMethod().equals("POST")) {
        reply(exchange, new Answer(405, "POST a serialized PredictRequest".getBytes(StandardCharsets.UTF_8)));
        return;
      }
      byte[] request = exchange.getRequestBody().readAllBytes();
      reply(exchange, model.process(request));
    });
    server.createContext("/model_info", exchange -> reply(exchange, model.modelInfo()));
    ExecutorService pool = Executors.newFixedThreadPool(threads);
    server.setExecutor(pool);
    server.start();
    System.out.printf("listening on %s:%d%n", server.getAddress().getHostString(), server.getAddress().getPort());
    System.out.flush();

    stop.await();
    server.stop(5);
    pool.shutdown();
    pool.awaitTermination(5, TimeUnit.SECONDS);
    Library.finalize(handle);
    System.out.println("stopped");
    System.exit(0);
  }
}
