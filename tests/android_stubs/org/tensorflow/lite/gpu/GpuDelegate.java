package org.tensorflow.lite.gpu;
public class GpuDelegate implements org.tensorflow.lite.Delegate, java.io.Closeable {
    public static class Options { public Options() {} }
    public GpuDelegate() {}
    public GpuDelegate(Options options) {}
    public long getNativeHandle() { return 0; }
    public void close() {}
}
