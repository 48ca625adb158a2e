package org.tensorflow.lite;
public final class Interpreter implements AutoCloseable {
    public static byte[] lastInput;                   // stand-in only: what the caller passed in
    public static java.util.List<byte[]> nextOutputs; // stand-in only: what each output buffer receives
    public static int modelBytes;
    public static boolean closed;
    public static java.util.List<String> inputNames;  // stand-in only: the signature's names (null: no signature)
    public static java.util.List<String> outputNames; // in the order of nextOutputs
    public static class Options {
        public Options() {}
        public Options setNumThreads(int numThreads) { return this; }
        public Options addDelegate(Delegate delegate) { return this; }
    }
    public Interpreter(java.nio.ByteBuffer byteBuffer, Options options) { modelBytes = byteBuffer.capacity(); }
    private static void record(Object input) {
        java.nio.ByteBuffer in = ((java.nio.ByteBuffer) input).duplicate();
        in.rewind();
        lastInput = new byte[in.remaining()];
        in.get(lastInput);
    }
    public void run(Object input, Object output) {
        record(input);
        ((java.nio.ByteBuffer) output).put(nextOutputs.get(0));
    }
    public void runForMultipleInputsOutputs(Object[] inputs, java.util.Map<Integer, Object> outputs) {
        record(inputs[0]);
        for (java.util.Map.Entry<Integer, Object> e : outputs.entrySet())
            ((java.nio.ByteBuffer) e.getValue()).put(nextOutputs.get(e.getKey()));
    }
    /** The default signature, by name, as LiteRT runs it: an unknown name is an IllegalArgumentException. */
    public void runSignature(java.util.Map<String, Object> inputs, java.util.Map<String, Object> outputs) {
        if (inputNames == null) throw new IllegalArgumentException("the model has no signature");
        for (String name : inputs.keySet())
            if (!inputNames.contains(name)) throw new IllegalArgumentException("Input error: " + name + " not found");
        record(inputs.values().iterator().next());
        for (java.util.Map.Entry<String, Object> e : outputs.entrySet()) {
            int k = outputNames.indexOf(e.getKey());
            if (k < 0) throw new IllegalArgumentException("Output error: " + e.getKey() + " not found");
            ((java.nio.ByteBuffer) e.getValue()).put(nextOutputs.get(k));
        }
    }
    public void close() { closed = true; }
}
