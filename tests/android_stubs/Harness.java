import android.content.Context;
import android.content.res.AssetManager;
import android.graphics.Bitmap;
import java.nio.file.Files;
import java.nio.file.Paths;

/** Runs a generated classifier: java Harness CLASS ASSETS_DIR PIXELS(int32 LE, W*H) W H OUTPUT_BYTES */
public class Harness {
    public static void main(String[] args) throws Exception {
        java.io.File assets = new java.io.File(args[1]);
        byte[] raw = Files.readAllBytes(Paths.get(args[2]));
        int width = Integer.parseInt(args[3]), height = Integer.parseInt(args[4]);
        int[] pixels = new int[width * height];
        java.nio.ByteBuffer.wrap(raw).order(java.nio.ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(pixels);
        org.tensorflow.lite.Interpreter.nextOutput = Files.readAllBytes(Paths.get(args[5]));
        Context context = new Context() {
            public AssetManager getAssets() { return new AssetManager(assets); }
        };
        Class<?> cls = Class.forName(args[0]);
        Object classifier = cls.getConstructor(Context.class, int.class).newInstance(context, 2);
        Object top = cls.getMethod("classify", Bitmap.class, int.class).invoke(classifier, new Bitmap(width, height, pixels), 3);
        float[] scores = (float[]) cls.getMethod("scores", Bitmap.class).invoke(classifier, new Bitmap(width, height, pixels));
        String used = (String) cls.getMethod("getDelegateUsed").invoke(classifier);
        ((java.io.Closeable) classifier).close();
        StringBuilder json = new StringBuilder("{\"delegate\": \"" + used + "\", \"model_bytes\": "
            + org.tensorflow.lite.Interpreter.modelBytes + ", \"closed\": " + org.tensorflow.lite.Interpreter.closed + ", \"input\": [");
        byte[] in = org.tensorflow.lite.Interpreter.lastInput;
        for (int i = 0; i < in.length; i++) json.append(i == 0 ? "" : ", ").append(in[i]);
        json.append("], \"scores\": [");
        for (int i = 0; i < scores.length; i++) json.append(i == 0 ? "" : ", ").append(scores[i]);
        json.append("], \"top\": \"").append(top.toString().replace("\"", "'")).append("\"}");
        System.out.println(json);
    }
}
