package org.tensorflow.lite;
public final class Interpreter implements AutoCloseable {
    public static byte[] lastInput;        // stand-in only: what the caller passed to run()
    public static byte[] nextOutput;       // stand-in only: what run() writes into the output buffer
    public static int modelBytes;
    public static boolean closed;
    public static class Options {
        public Options() {}
        public Options setNumThreads(int numThreads) { return this; }
        public Options addDelegate(Delegate delegate) { return this; }
    }
    public Interpreter(java.nio.ByteBuffer byteBuffer, Options options) { modelBytes = byteBuffer.capacity(); }
    public void run(Object input, Object output) {
        java.nio.ByteBuffer in = ((java.nio.ByteBuffer) input).duplicate();
        in.rewind();
        lastInput = new byte[in.remaining()];
        in.get(lastInput);
        java.nio.ByteBuffer out = (java.nio.ByteBuffer) output;
        out.put(nextOutput);
    }
    public void close() { closed = true; }
}
