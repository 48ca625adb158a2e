package android.content.res;
public class AssetFileDescriptor implements java.io.Closeable {
    private final java.io.FileInputStream stream;
    private final long length;
    public AssetFileDescriptor(java.io.File file) throws java.io.IOException {  // stand-in only
        stream = new java.io.FileInputStream(file);
        length = file.length();
    }
    public java.io.FileDescriptor getFileDescriptor() throws java.io.IOException { return stream.getFD(); }
    public long getStartOffset() { return 0; }
    public long getDeclaredLength() { return length; }
    public void close() throws java.io.IOException { stream.close(); }
}
