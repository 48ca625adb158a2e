package android.graphics;
public final class Bitmap {
    private final int width, height;
    private final int[] argb;
    public Bitmap(int width, int height, int[] argb) { this.width = width; this.height = height; this.argb = argb; }
    public static Bitmap createScaledBitmap(Bitmap src, int dstWidth, int dstHeight, boolean filter) {
        int[] out = new int[dstWidth * dstHeight];  // nearest neighbour: enough for a stand-in
        for (int y = 0; y < dstHeight; y++)
            for (int x = 0; x < dstWidth; x++)
                out[y * dstWidth + x] = src.argb[(y * src.height / dstHeight) * src.width + x * src.width / dstWidth];
        return new Bitmap(dstWidth, dstHeight, out);
    }
    public int getWidth() { return width; }
    public int getHeight() { return height; }
    public void getPixels(int[] pixels, int offset, int stride, int x, int y, int w, int h) {
        for (int row = 0; row < h; row++)
            System.arraycopy(argb, (y + row) * width + x, pixels, offset + row * stride, w);
    }
}
