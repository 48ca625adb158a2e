package android.content.res;
public final class AssetManager {
    private final java.io.File root;
    public AssetManager(java.io.File root) { this.root = root; }  // stand-in only: the real one comes from Context
    public AssetFileDescriptor openFd(String fileName) throws java.io.IOException {
        return new AssetFileDescriptor(new java.io.File(root, fileName));
    }
}
